"""How much of each request's forgetting survives EUL's fusion of per-request unlearning layers.

EUL (METHODS.md, seed method 2) fuses the layers of k deletion requests per linear map with
W = (Σ G_i + εI)^-1 Σ G_i W_i, G_i the Gram matrix of request i's forget inputs to that map
(``unmem.methods.eul.fuse_unlearning_layers``). That fits every layer on its own request's
inputs exactly only where the requests' inputs span different directions. This script takes
EUL runs of single requests (``unmem unlearn --method eul`` outputs, each from the same model)
and reports each request's forget probability (mean over its QA of exp(-token-mean NLL of the
answer)) under: the starting model, each layer alone, the layers fused with Gram matrices over
every token (what a store does), over the tokens that predict an answer token, over those that
predict a sensitive-span token, and the plain mean of the layers; plus the retain QA's, and the
cosine similarity of the requests' Gram matrices (1: the same input directions).

    python benchmarks/eul_fusion.py --model runs/models/target --runs runs/fuse/eul-r01 runs/fuse/eul-r02 \\
        --forget runs/fuse/r01.jsonl runs/fuse/r02.jsonl --retain runs/world/qa/retain90.jsonl --out runs/fuse/fusion.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from unmem.data.collate import PromptFormat, collate, encode_qa
from unmem.io import read_records, write_json
from unmem.logprobs import SENSITIVE_MARKER
from unmem.methods.eul import EULConfig, collect_grams, eul_prepare_model, fuse_unlearning_layers
from unmem.models import load_model

GRAM_TOKENS = ("all", "answer", "sensitive")


def batch(tokenizer: Any, fmt: PromptFormat, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    examples = [
        encode_qa(tokenizer, r["question"], r["answer"], fmt, sensitive=r.get("sensitive") or ())
        for r in records
    ]
    return collate(examples, tokenizer.pad_token_id, padding_side="right")


def token_masks(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Which input positions a Gram matrix counts: all real tokens, those predicting an answer
    token (position t-1 for label t), those predicting a token of a sensitive span."""
    labels = encoded["labels"]
    answer = torch.zeros_like(labels, dtype=torch.bool)
    answer[:, :-1] = labels[:, 1:] != -100
    sensitive = torch.zeros_like(answer)
    weights = encoded.get("token_weights")
    if weights is not None:
        sensitive[:, :-1] = (weights[:, 1:] - SENSITIVE_MARKER).abs() < 1e-3
    return {"all": encoded["attention_mask"].bool(), "answer": answer, "sensitive": sensitive}


@torch.no_grad()
def forget_prob(model: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> float:
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[:, :-1]
    labels = encoded["labels"][:, 1:]
    mask = labels != -100
    logps = torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return float(torch.exp((logps * mask).sum(1) / mask.sum(1)).mean())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a * b).sum() / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model every run started from")
    parser.add_argument("--runs", nargs="+", required=True, help="`unmem unlearn --method eul` outputs")
    parser.add_argument("--forget", nargs="+", required=True, help="each run's forget file, in order")
    parser.add_argument("--retain", required=True, help="retain QA (the first 100 are scored)")
    parser.add_argument("--out", required=True, help="results JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    card = json.loads((Path(args.runs[0]) / "model" / "unmem_model.json").read_text())
    model, tokenizer = load_model(args.model, device="cpu", dtype="float32")
    model = eul_prepare_model(model, EULConfig(**card.get("method_args", {}))).eval()
    fmt = PromptFormat.for_tokenizer(tokenizer)
    requests = [batch(tokenizer, fmt, read_records(path, ("question", "answer"))) for path in args.forget]
    retain = batch(tokenizer, fmt, read_records(args.retain, ("question", "answer"))[:100])
    layers = [load_file(str(Path(run) / "model" / "method_layers.safetensors")) for run in args.runs]
    grams: dict[str, list[dict[str, torch.Tensor]]] = {kind: [] for kind in GRAM_TOKENS}
    for layer, encoded in zip(layers, requests, strict=True):
        model.load_state_dict(layer, strict=False)
        for kind, mask in token_masks(encoded).items():
            batches = [
                {
                    "input_ids": encoded["input_ids"],
                    "attention_mask": encoded["attention_mask"],
                    "gram_mask": mask,
                }
            ]
            grams[kind].append(collect_grams(model, batches))

    def score(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        model.load_state_dict(state, strict=False)
        return {
            "forget_prob": [round(forget_prob(model, r), 4) for r in requests],
            "retain_prob": round(forget_prob(model, retain), 4),
        }

    zero = {key: torch.zeros_like(value) for key, value in layers[0].items()}
    rows = {"start (no layer)": score(zero)}
    rows |= {f"layer {i + 1} alone": score(layer) for i, layer in enumerate(layers)}
    rows |= {
        f"fused, Gram over {kind} tokens": score(fuse_unlearning_layers(layers, grams[kind]))
        for kind in GRAM_TOKENS
    }
    rows["mean of the layers"] = score(
        {key: torch.stack([layer[key] for layer in layers]).mean(0) for key in zero}
    )
    similarity = {
        name: [
            round(cosine(grams["all"][i][name], grams["all"][j][name]), 4)
            for i, j in itertools.combinations(range(len(layers)), 2)
        ]
        for name in grams["all"][0]
    }
    write_json(args.out, {"runs": args.runs, "rows": rows, "gram_cosine_all_tokens": similarity})
    width = max(map(len, rows))
    print(f"{'':{width}}  " + "  ".join(f"r{i + 1:<5}" for i in range(len(layers))) + "  retain")
    for name, row in rows.items():
        print(
            f"{name:{width}}  "
            + "  ".join(f"{p:<6.3f}" for p in row["forget_prob"])
            + f"  {row['retain_prob']:.3f}"
        )
    for name, values in similarity.items():
        print(f"Gram cosine between requests, {name}: min {min(values):.3f}, max {max(values):.3f}")


if __name__ == "__main__":
    main()
