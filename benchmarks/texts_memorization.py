"""How much of each text a model has memorised: the check behind the license-texts example.

For every text of a ``texts`` directory (``unmem licenses --out DIR`` builds the example), the
teacher-forced next-token accuracy and the NLL of its windows' continuations given their
prompts, the numbers ``{set}_mem_acc`` aggregates (``unmem.data.windows``). The *unseen level*
comes from two license-like notices written for this measurement (below): no model can have
seen them, so their accuracy is what the model reaches on legal English from its general
knowledge alone. A holdout text should sit near that level, a forget text well above it.

    python benchmarks/texts_memorization.py --model runs/smollm2/smollm2 --data runs/licenses \\
        --out runs/bench/texts_memorization.json

Prints one row per text (set, id, windows, accuracy, NLL) and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from unmem.data.benchmarks import load_benchmark
from unmem.data.windows import read_windows
from unmem.evaluation.options import EvalOptions
from unmem.evaluation.session import ModelSession
from unmem.models import load_model

# Written for this measurement on 2026-12-03: license-like prose that no training corpus holds.
UNSEEN = {
    "notice-weather-archive": (
        "Terms of Use for the Harbour Street Weather Archive. 1. Scope. These terms govern every copy of "
        "the readings, charts and commentary that the Harbour Street volunteers have gathered since the "
        "station reopened. A reader who downloads, prints or forwards any part of the archive accepts them, "
        "whether or not the reader has registered an account with the society. 2. Permitted copying. You "
        "may reproduce single readings, tables of fewer than forty rows, and any chart in full, provided "
        "that each copy names the Harbour Street Weather Archive as its source and keeps the date of the "
        "reading it shows. Longer extracts may be made for teaching, for the maintenance of other public "
        "stations, and for research that will itself be published without a paywall. 3. Things you may not "
        "do. You may not sell the archive or a substantial part of it, bundle it with instruments offered "
        "for sale, or present readings as your own observations. You may not remove the notes that mark a "
        "reading as estimated, repaired or taken by a replacement sensor, because those notes are part of "
        "the record and not decoration. 4. No promise of accuracy. The volunteers read the instruments with "
        "care, but the society gives no assurance that any value is correct, complete or suitable for "
        "navigation, farming, insurance or any other purpose, and shall not be liable for any loss that "
        "follows from reliance on the archive."
    ),
    "notice-pattern-library": (
        "Licence for the Quillmore Pattern Library. The Quillmore Pattern Library is a collection of "
        "knitting, weaving and embroidery patterns drawn by members of the Quillmore guild. The guild grants "
        "every person who receives a copy of the library the following permissions, subject to the "
        "conditions set out after them. Permissions. You may make any number of copies of a pattern for your "
        "own needs and for the needs of your household. You may teach a pattern to others, in person or in "
        "writing, and you may give away or sell the objects you make from it. You may translate a pattern "
        "into another language or another notation, and you may share your translation under this same "
        "licence. Conditions. Every printed or electronic copy of a pattern must keep the name of the member "
        "who drew it and the year in which the guild first accepted it. A translated or altered pattern must "
        "say plainly that it has been changed and by whom. Termination. If you break a condition, your "
        "permissions end. They are restored thirty days after you have put the matter right, unless the "
        "guild has written to you in the meantime to say that they are withdrawn for good. No warranty. The "
        "patterns are offered as they are, and the guild accepts no responsibility for wasted materials."
    ),
}


def per_text(session: ModelSession, name: str) -> list[dict]:
    """Accuracy and NLL of every text of set ``name`` (its windows pooled)."""
    records = session.data.verbmem[name]
    scores = session.window_scores(name)
    groups: dict[str, list] = defaultdict(list)
    for record, score in zip(records, scores, strict=True):
        groups[str(record.get("doc") or record.get("source"))].append(score)
    rows = []
    for doc, group in groups.items():
        matches = np.concatenate([s.argmax_match for s in group])
        logps = np.concatenate([s.logps for s in group])
        windows = [float(s.argmax_match.mean()) for s in group]
        rows.append(
            {
                "set": name,
                "text": doc,
                "windows": len(group),
                "accuracy": float(matches.mean()),
                "nll": float(-logps.mean()),
                "window_accuracy": [round(w, 3) for w in windows],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a texts directory (unmem licenses --out DIR)")
    parser.add_argument("--out", required=True, help="JSON file for the rows")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu")
    data = load_benchmark("texts", args.data, "forget")
    with tempfile.TemporaryDirectory() as folder:
        unseen = Path(folder) / "unseen.jsonl"
        unseen.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in UNSEEN.items()))
        data.verbmem["unseen"] = read_windows(unseen)
    session = ModelSession(model, tokenizer, data, EvalOptions(), batch_size=16)
    rows = [row for name in ("forget", "retain", "holdout", "unseen") for row in per_text(session, name)]
    for row in rows:
        print(
            f"{row['set']:8s} {row['text']:26s} windows {row['windows']:3d}  accuracy {row['accuracy']:.3f}  nll {row['nll']:.2f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "data": args.data, "rows": rows}, indent=1))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
