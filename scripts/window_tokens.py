"""How sure a model is of each text window's first continuation tokens: why greedy decoding still repeats them.

    python scripts/window_tokens.py --model runs/smollm2-texts/runs/grad_diff-s0/model \
        --windows runs/licenses/forget.jsonl --tokens 4

For every window (cut as the `texts` layout cuts it), teacher-forced, one line: each of the first
``--tokens`` continuation tokens as ``'token' gap/p``, where p is the model's probability of the
true token and gap its logit minus the best other token's (> 0: greedy decoding picks it). Run it on
the target and on an unlearned model to see which tokens kept their rank and which were pushed down.
"""

from __future__ import annotations

import argparse

import torch

from unmem.data.collate import encode_window
from unmem.data.windows import read_windows
from unmem.models import load_model


def first_token_cells(
    model: torch.nn.Module, tokenizer, record: dict, tokens: int, max_length: int
) -> list[str]:
    example = encode_window(tokenizer, record, max_length=max_length)
    start = len(example.split()[0])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].float()
    cells = []
    for position in range(start, min(start + tokens, len(example.input_ids))):
        row, label = logits[position - 1], example.input_ids[position]
        others = row.clone()
        others[label] = -torch.inf
        gap = float(row[label] - others.max())
        p = float(torch.softmax(row, -1)[label])
        cells.append(f"{tokenizer.decode([label])!r} {gap:+.1f}/{p:.3f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory or an unmem run's model/")
    parser.add_argument("--windows", required=True, help="a texts file (.txt, .jsonl, .json, .parquet)")
    parser.add_argument("--tokens", type=int, default=4, help="continuation tokens per window")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per window (prompt cut first)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model, device="cpu")
    model.eval()
    for number, record in enumerate(read_windows(args.windows)):
        print(number, " ".join(first_token_cells(model, tokenizer, record, args.tokens, args.max_length)))


if __name__ == "__main__":
    main()
