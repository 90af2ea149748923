"""Where a forget loss pushes: the share of its logit gradient on the tokens a model reproduces.

    python scripts/gradient_share.py --model runs/smollm2/smollm2 --windows runs/licenses/forget.jsonl

Teacher-forced over every window's continuation (cut as the `texts` layout cuts it), the gradient of
a token's loss with respect to its logits is, for the token-mean NLL that gradient ascent (GA)
raises, ``softmax - onehot`` (norm about 1 - p: largest where the model does *not* predict the
token); for the mean token probability that FLAT lowers, ``p * (onehot - softmax)`` (scaled by p:
largest where it does). The script prints, for both, the share of the summed squared gradient norm
that falls on the tokens the model ranks first ("reproduced": what the memorisation accuracy
counts), beside that share of the tokens themselves.
"""

from __future__ import annotations

import argparse

import torch

from unmem.data.collate import encode_window
from unmem.data.windows import read_windows
from unmem.models import load_model


def token_gradients(model: torch.nn.Module, tokenizer, record: dict, max_length: int) -> torch.Tensor:
    """(tokens, 3): reproduced (0/1), GA's and FLAT's squared logit-gradient norm per continuation token."""
    example = encode_window(tokenizer, record, max_length=max_length)
    prompt, truth = example.split()
    ids = torch.tensor([prompt + truth])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    probs = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(torch.tensor(truth), probs.shape[-1]).float()
    p_true = (probs * onehot).sum(-1)
    ga = (probs - onehot).pow(2).sum(-1)
    flat = (p_true[:, None] * (onehot - probs)).pow(2).sum(-1)
    reproduced = (logits.argmax(-1) == torch.tensor(truth)).float()
    return torch.stack([reproduced, ga, flat], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory or an unmem run's model/")
    parser.add_argument("--windows", required=True, help="a texts file (.txt, .jsonl, .json, .parquet)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per window (prompt cut first)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_model(args.model, device="cpu")
    model.eval()
    rows = torch.cat(
        [token_gradients(model, tokenizer, r, args.max_length) for r in read_windows(args.windows)]
    )
    reproduced = rows[:, 0].bool()
    print(f"{len(rows)} tokens, reproduced (ranked first): {reproduced.float().mean():.3f}")
    for column, name in ((1, "GA (token-mean NLL)"), (2, "FLAT (mean token probability)")):
        share = rows[reproduced, column].sum() / rows[:, column].sum()
        print(f"{name}: share of squared logit-gradient norm on reproduced tokens {share:.3f}")


if __name__ == "__main__":
    main()
