"""The ``texts`` layout's example: license texts that SmolLM2 memorised, built from this machine's files.

Nothing is downloaded and no license text ships with unmem: ``build_license_texts`` reads
what every Debian/Ubuntu machine and every unmem install has, and writes a ``texts``
directory (``unmem.data.benchmarks.texts``):

- **forget** (what a request asks to remove): the MIT license as four of unmem's own
  dependencies ship it (pydantic, typer, rich, PyYAML: one text each, their copyright lines
  differ) and the BSD license (``/usr/share/common-licenses/BSD``): SmolLM2-135M-Instruct
  predicts 0.67-0.80 of their next tokens exactly (teacher-forced, per text);
- **retain** (text the model must keep): the "how to apply" appendices of the GPL-2, GPL-3,
  LGPL-2.1 and Apache-2.0, whose notices ("This program is free software ...", "Licensed under
  the Apache License ...") are copied into millions of source files (0.55-0.81 on their notice
  windows, 0.29-0.45 on the instructions around them), and the Zen of Python (``this.s``,
  rot13-decoded; 0.44: it knows the style, not the words);
- **holdout** (the same kind of text, not memorised): the CC0-1.0 and LGPL-3 texts (0.39),
  near license-like text written for the measurement and certainly never seen (0.32-0.35).

``benchmarks/texts_memorization.py`` measures those numbers (docs/real-models.md). The
directory also gets the world's real-world and world-facts QA (the model's general
knowledge, unmem's own generator) and 50 passages of the default world's general text, so
the evaluation scores utility besides memorisation. A missing source is one error naming
the file; the output appears whole or not at all.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import atomic_dir, read_text, write_json, write_jsonl

COMMON_LICENSES = Path("/usr/share/common-licenses")
MIT_DISTRIBUTIONS = ("pydantic", "typer", "rich", "pyyaml")
MIT_MARKER = "Permission is hereby granted, free of charge"
# Where each license's appendix (how to apply it to your work, with the notice to copy) begins.
APPENDICES = {
    "GPL-2": "How to Apply These Terms to Your New Programs",
    "GPL-3": "How to Apply These Terms to Your New Programs",
    "LGPL-2.1": "How to Apply These Terms to Your New Libraries",
    "Apache-2.0": "APPENDIX: How to apply the Apache License to your work.",
}
HOLDOUT_LICENSES = ("CC0-1.0", "LGPL-3")
WORLD_FILES = {"qa/real_world.jsonl": "real_world", "qa/world_facts.jsonl": "world_facts"}
GENERAL_FILE = "text/general_eval.jsonl"


@dataclass(frozen=True)
class Source:
    """One text of the example: a name, where it comes from, and how to read it."""

    id: str
    origin: str  # the file it is read from (or the Python module)
    read: Callable[[], str]


def _require(path: Path) -> str:
    if not path.is_file():
        raise UnmemError(
            f"{path}: not found; the license-texts example reads it (Debian/Ubuntu ship it in package "
            "base-files; elsewhere pass --licenses-dir with the license texts under the same names)"
        )
    return read_text(path)


def common_license(folder: Path, name: str) -> Source:
    path = folder / name
    return Source(name, str(path), lambda: _require(path))


def appendix(folder: Path, name: str) -> Source:
    """A license file's appendix: from its heading to the end (the notice to copy into a work)."""
    path, heading = folder / name, APPENDICES[name]

    def read() -> str:
        text = _require(path)
        start = text.find(heading)
        if start < 0:
            raise UnmemError(f"{path}: the appendix '{heading}' was not found; is this the FSF/ASF text?")
        return text[start:]

    return Source(f"{name}-appendix", f"{path} (from '{heading}')", read)


def mit_license(distribution: str) -> Source:
    """The MIT license file an installed distribution ships in its metadata."""

    def find() -> Path:
        try:
            files = metadata.files(distribution) or []
        except metadata.PackageNotFoundError:
            raise UnmemError(
                f"package {distribution}: not installed; the license-texts example reads its MIT license"
            ) from None
        for file in files:
            name = Path(str(file)).name.upper()
            if name.startswith(("LICENSE", "LICENCE", "COPYING")):
                path = Path(str(file.locate()))
                if path.is_file() and MIT_MARKER in read_text(path):
                    return path
        raise UnmemError(f"package {distribution}: no MIT license file in its metadata ({MIT_MARKER!r})")

    return Source(f"MIT-{distribution}", f"{distribution} package metadata", lambda: read_text(find()))


def zen_of_python() -> Source:
    def read() -> str:
        with contextlib.redirect_stdout(io.StringIO()):  # its first import prints the Zen
            import this
        return codecs.decode(this.s, "rot13")

    return Source("zen-of-python", "python module this (this.s, rot13)", read)


def example_sources(licenses_dir: Path = COMMON_LICENSES) -> dict[str, list[Source]]:
    """The texts of each set; reading one that is missing raises an error naming it."""
    return {
        "forget": [*(mit_license(d) for d in MIT_DISTRIBUTIONS), common_license(licenses_dir, "BSD")],
        "retain": [*(appendix(licenses_dir, name) for name in APPENDICES), zen_of_python()],
        "holdout": [common_license(licenses_dir, name) for name in HOLDOUT_LICENSES],
    }


def _utility_records() -> dict[str, list[dict[str, Any]]]:
    """The world's real-world / world-facts QA and general text (default world, seed 0), in memory."""
    from unmem.data.world import WorldConfig, build_world

    _, files = build_world(WorldConfig.from_preset("default", seed=0))
    records = {stem: files[path] for path, stem in WORLD_FILES.items()}
    records["general_eval"] = [{"text": r["text"]} for r in files[GENERAL_FILE]]
    return records


def build_license_texts(
    out_dir: str | Path, *, licenses_dir: str | Path = COMMON_LICENSES, overwrite: bool = False
) -> Path:
    """Write the example ``texts`` directory (module docstring); returns its path. Every source is
    read before anything is written."""
    sets = {
        name: [{"id": s.id, "source": s.origin, "text": s.read()} for s in sources]
        for name, sources in example_sources(Path(licenses_dir)).items()
    }
    utility = _utility_records()
    manifest = {
        "layout": "texts",
        "sets": {
            name: [
                {
                    "id": r["id"],
                    "source": r["source"],
                    "sha256": hashlib.sha256(r["text"].encode()).hexdigest(),
                }
                for r in records
            ]
            for name, records in sets.items()
        },
        "utility": {
            "real_world, world_facts, general_eval": "unmem's world generator (default preset, seed 0)"
        },
    }
    with atomic_dir(Path(out_dir), overwrite=overwrite) as staging:
        for name, records in {**sets, **utility}.items():
            write_jsonl(staging / f"{name}.jsonl", records)
        write_json(staging / "manifest.json", manifest)
    return Path(out_dir)
