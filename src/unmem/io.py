"""Atomic writes, JSON/JSONL reading with precise errors, and content hashing.

Every file unmem writes goes through here: a crash or Ctrl-C leaves either the old
file or the new one, never half of one, and a directory appears only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError, input_error


def _default_mode(directory: bool) -> int:
    """What a plain open()/mkdir() would give: temp files are 0600/0700, results should not be."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, _default_mode(directory=False))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    return write_text_atomic(path, "".join(_dump(row) + "\n" for row in rows))


COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
}


def _not_text(path: Path, data: bytes, exc: UnicodeDecodeError) -> UnmemError:
    """Name a compressed file as such, else the line of the first byte that is not UTF-8."""
    for magic, kind in COMPRESSED.items():
        if data.startswith(magic):
            return input_error(path, f"is {kind}-compressed; decompress it first (unmem reads UTF-8 text)")
    line = data[: exc.start].count(b"\n") + 1
    return input_error(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); re-save it as UTF-8", line=line)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; a missing, compressed or otherwise non-UTF-8 file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_text(path, data, exc) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise input_error(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for every non-blank line; a bad line names itself."""
    path = Path(path)
    for lineno, raw in enumerate(
        read_text(path).split("\n"), start=1
    ):  # not splitlines: JSON may hold U+2028
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise input_error(path, f"invalid JSON: {exc.msg}", line=lineno) from None
        if not isinstance(record, dict):
            raise input_error(path, f"expected a JSON object, got {type(record).__name__}", line=lineno)
        yield lineno, record


def _json_file_records(path: Path) -> list[tuple[int, Any]]:
    """(position, value) pairs of a ``.json`` file: a JSON list (position = record number) or,
    as TOFU publishes its ``.json`` files, JSON Lines (position = line number)."""
    text = read_text(path)
    start = text.lstrip()[:1]
    if start == "[":
        data = read_json(path)
        return list(enumerate(data, start=1))
    if start == "{":
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return list(iter_jsonl(path))  # "Extra data" after the first object: JSON Lines
        if "\n" in text.strip():
            raise input_error(path, "expected a JSON list of records or JSON Lines, got one JSON object")
        return list(iter_jsonl(path))  # one line, one record
    raise input_error(
        path, "expected a JSON list of records or JSON Lines (one object per line)", line=1 if text else None
    )


def read_values(path: str | Path) -> list[tuple[int, Any]]:
    """(line or record number, value) of every record of a .jsonl, .json or .parquet file."""
    path = Path(path)
    if path.suffix == ".json":
        return _json_file_records(path)
    if path.suffix == ".parquet":
        return list(enumerate(_read_parquet(path), start=1))
    return list(iter_jsonl(path))


def read_records(
    path: str | Path,
    required: Sequence[str] = (),
    *,
    types: Mapping[str, type | tuple[type, ...]] | None = None,
    allow_empty: bool = False,
) -> list[dict[str, Any]]:
    """Read a JSONL file, a ``.json`` file holding a list of objects or JSON Lines (TOFU's
    published files are JSON Lines named ``.json``), or a ``.parquet`` file.

    Every record must carry ``required`` fields (non-empty); ``types`` checks field types.
    Errors name the file, the line (JSON Lines) or record number (JSON list), and the field.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    for lineno, record in read_values(path):
        if not isinstance(record, dict):
            raise input_error(path, f"expected a JSON object, got {type(record).__name__}", line=lineno)
        for name in required:
            value = record.get(name)
            if value is None or (isinstance(value, str | list) and len(value) == 0):
                raise input_error(path, "missing or empty", line=lineno, field=name)
        for name, expected in (types or {}).items():
            if name in record and not isinstance(record[name], expected):
                raise input_error(
                    path, f"expected {expected}, got {type(record[name]).__name__}", line=lineno, field=name
                )
        records.append(record)
    if not records and not allow_empty:
        raise input_error(path, "no records: the file is empty")
    return records


OUTPUT_MARKER = ".unmem-output"  # in every directory unmem writes: only these may be replaced


def is_unmem_output(path: str | Path) -> bool:
    return (Path(path) / OUTPUT_MARKER).is_file()


def mark_output(directory: str | Path) -> None:
    """Put unmem's marker in ``directory``: what makes it replaceable by ``--overwrite`` later."""
    marker = Path(directory) / OUTPUT_MARKER
    if not marker.is_file():
        write_text_atomic(marker, "written by unmem; `--overwrite` may replace this directory\n")


def check_replaceable(final: str | Path, overwrite: bool) -> None:
    """Refuse to replace ``final`` unless asked to, and never a directory unmem did not write.

    ``--overwrite`` deletes what the path holds; a typo there must not delete a user's
    model or data, so only a directory carrying unmem's marker is ever replaced.
    """
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if not overwrite:
        raise UnmemError(f"{final}: already exists; choose another --out or pass --overwrite")
    if not final.is_dir() or final.is_symlink():
        raise UnmemError(f"{final}: not a directory unmem wrote; refusing to replace it with --overwrite")
    if any(final.iterdir()) and not is_unmem_output(final):
        raise UnmemError(
            f"{final}: not written by unmem (no {OUTPUT_MARKER}); refusing to replace it with --overwrite"
        )


def _relation(out: Path, source: Path) -> str | None:
    if out == source:
        return "is"
    if source in out.parents:
        return "is inside"
    if out in source.parents:
        return "contains"
    return None


def check_not_an_input(
    out: str | Path, inputs: Mapping[str, str | Path | None], *, flag: str = "--out"
) -> Path:
    """The resolved ``out``, refusing one that is, holds or sits inside any input.

    Paths are compared after resolving symbolic links, so a link cannot smuggle an input
    under the output (or the output into an input).
    """
    resolved = Path(out).resolve()
    for name, source in inputs.items():
        if source is None:
            continue
        relation = _relation(resolved, Path(source).resolve())
        if relation:
            raise UnmemError(
                f"{flag} {resolved} {relation} the input {name} {Path(source).resolve()}; "
                f"unmem never writes into its inputs"
            )
    return resolved


def first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first place where two JSON values differ, as 'path old -> new' (None: equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if old == new else f"{path or 'value'} {old!r} -> {new!r}"


def _normalise_modes(root: Path) -> None:
    """Files written by libraries through temp files (safetensors: 0600) get the umask's mode."""
    file_mode, dir_mode = _default_mode(directory=False), _default_mode(directory=True)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, dir_mode if path.is_dir() else file_mode)
    os.chmod(root, dir_mode)


def remove_stale_staging(final: Path) -> None:
    """Delete ``.<name>.*.partial`` / ``.trash`` folders left by a run killed while saving ``final``."""
    for leftover in final.parent.glob(f".{final.name}.*"):
        if leftover.is_dir() and leftover.name.endswith((".partial", ".trash")):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place on success.

    On any exception (Ctrl-C included) the partial directory is removed, so ``final``
    either does not exist or is complete. An old ``final`` is renamed aside before the
    new one takes its name, so a crash in between leaves one of them, never neither.
    The result carries unmem's marker, which is what makes it replaceable later.
    """
    final = Path(final)
    check_replaceable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield staging
        mark_output(staging)
        _normalise_modes(staging)
        trash = None
        if final.exists():
            trash = staging.with_name(staging.name.removesuffix(".partial") + ".trash")
            os.replace(final, trash)
        os.replace(staging, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UnmemError(
                f"{final}: no space left on the device while writing it; the partial copy was removed "
                "and nothing was published there (free space and re-run)"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_parquet(path: Path) -> list[Any]:
    import pyarrow
    import pyarrow.parquet as pq

    if not path.is_file():
        raise input_error(path, "file not found")
    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        raise input_error(path, f"not a readable Parquet file ({str(exc).splitlines()[0]})") from None


@contextlib.contextmanager
def exclusive_lock(target: str | Path) -> Iterator[Path]:
    """Hold ``<target>.lock`` (an flock) while writing ``target``; a second writer fails at once.

    The lock file names its holder, so the error can say who. The kernel releases the
    lock when the holder dies (kill -9 included), so a leftover file never blocks a
    later run. Failing to create it is also how an unwritable output is caught early.
    """
    import fcntl
    import socket
    import sys
    import time

    target = Path(target)
    lock_path = target.with_name(target.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = lock_path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise UnmemError(
                    f"{target}: in use by {holder}; wait for it to finish or choose another --out"
                ) from None
            # The holder before us may have unlinked the file between our open and our lock.
            if lock_path.exists() and os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})\n")
        handle.flush()
    except OSError as exc:  # read-only file system, permission denied, no space left
        raise UnmemError(f"{target}: cannot write there ({exc.strerror}); choose another --out") from None
    try:
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        handle.close()


def hash_json(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_files(paths: Iterable[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def cache_key(kind: str, **inputs: Any) -> str:
    """The one recipe for every cache key in unmem (evaluation families, retain references,
    experiment stages): a stable hash of the kind of result and everything it was made from."""
    return hash_json({"kind": kind, **inputs})


def json_safe(obj: Any) -> Any:
    """Strict-JSON copy: numpy scalars/arrays become Python values, NaN and inf become None."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
