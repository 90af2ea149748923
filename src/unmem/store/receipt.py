"""Receipts: what a request did, for the person who asked and for an auditor.

``receipt.json`` is derived from the request's ledger entry alone (``receipt_from_entry``), so
checking one (``unmem store verify --receipt R``) is: the chain verifies, the entry the receipt
names has the hash it names, and the receipt is exactly what that entry gives. It holds what
was forgotten as hashes and counts, never the records; the evidence before and after; every
acceptance check with its threshold and result; and the versions' hashes. ``receipt.md`` says
the same in a few lines. Formats: docs/requests.md.
"""

from __future__ import annotations

from typing import Any

from unmem.io import first_difference

RECEIPT_VERSION = 1
# Evidence a receipt shows, when the evaluation computed it: (metric id, what it is).
EVIDENCE = (
    ("mia_loss_auc", "membership AUC (LOSS attack), forget vs holdout: 0.5 = as unfamiliar as unseen data"),
    ("mia_loss_p", "Mann-Whitney p of that attack's scores, forget vs holdout: small = still told apart"),
    ("mia_min_k_auc", "membership AUC (Min-40%), forget vs holdout"),
    ("forget_prob", "mean probability of the forgotten answers"),
    ("forget_exact_mem", "exact memorisation: share of answer tokens the model predicts verbatim"),
    ("forget_extraction_strength", "extraction strength: how little of a prefix recovers the rest"),
    ("forget_el_10", "extraction likelihood, 10-grams of greedy continuations"),
    ("forget_rouge", "ROUGE-L recall of greedy answers to the forgotten questions"),
    ("model_utility", "model utility (harmonic mean of the utility sets)"),
    ("retain_prob", "mean probability of the retain answers"),
    ("general_ppl", "perplexity on general text"),
    ("forget_quality", "forget quality vs the retain model (KS p-value; 1 = indistinguishable)"),
)


def evidence(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        metric: {"before": before.get(metric), "after": after.get(metric)}
        for metric, _ in EVIDENCE
        if before.get(metric) is not None or after.get(metric) is not None
    }


def receipt_from_entry(entry: dict[str, Any], store_id: str) -> dict[str, Any]:
    """The receipt of a request's ledger entry."""
    data = entry.get("data") or {}
    forget = data.get("forget") or {}
    evaluation = entry.get("evaluation") or {}
    return {
        "receipt_version": RECEIPT_VERSION,
        "store": store_id,
        "ledger": {"seq": entry["seq"], "entry_hash": entry["hash"], "prev_hash": entry["prev"]},
        "request": entry["request"],
        "time": entry["time"],
        "outcome": entry["outcome"],
        "forced": entry.get("forced", False),
        "forgotten": {
            "records": forget.get("records"),
            "records_sha256": forget.get("records_sha256"),
            "file_sha256": forget.get("file_sha256"),
            "already_forgotten": (data.get("already_forgotten") or {}).get("records", 0),
        },
        "other_data": {
            name: {k: v for k, v in (data.get(name) or {}).items() if k in ("records", "file_sha256")}
            for name in ("retain", "holdout")
            if data.get(name)
        },
        "method": {
            "name": (entry.get("method") or {}).get("name"),
            "recipe": (entry.get("method") or {}).get("recipe"),
        },
        "model": {
            "version_before": entry.get("version_before"),
            "version_after": entry.get("version_after"),
            "sha256_before": entry.get("model_before"),
            "sha256_after": ((entry.get("made") or {}).get("digest") or {}).get("sha256")
            or entry.get("model_before"),
        },
        "evidence": evidence(evaluation.get("before") or {}, evaluation.get("after") or {}),
        "retain_model": evaluation.get("retain_model"),
        "checks": entry.get("checks") or [],
        "passed": entry.get("passed"),
    }


def receipt_problem(receipt: Any, entries: list[dict[str, Any]], store_id: str) -> str | None:
    """Why a receipt is not what the (verified) ledger gives; None when it is."""
    if not isinstance(receipt, dict) or "ledger" not in receipt:
        return "not an unmem receipt (no `ledger` field)"
    if receipt.get("store") != store_id:
        return f"issued by store {receipt.get('store')!r}, not this one ({store_id})"
    seq = (receipt.get("ledger") or {}).get("seq")
    if not isinstance(seq, int) or not 0 <= seq < len(entries):
        return f"names ledger entry {seq!r}, which the ledger (of {len(entries)} entries) does not hold"
    entry = entries[seq]
    if entry["hash"] != receipt["ledger"].get("entry_hash"):
        return (
            f"bound to ledger entry {seq} with hash {str(receipt['ledger'].get('entry_hash'))[:16]}…, "
            f"but that entry's hash is {entry['hash'][:16]}…"
        )
    if entry["kind"] != "request":
        return f"ledger entry {seq} is a {entry['kind']}, not a request"
    difference = first_difference(receipt_from_entry(entry, store_id), receipt)
    if difference is not None:
        return f"differs from ledger entry {seq}: {difference}"
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def render_markdown(receipt: dict[str, Any]) -> str:
    """receipt.md: the receipt in a few lines a person reads."""
    forgotten, model = receipt["forgotten"], receipt["model"]
    outcome = receipt["outcome"] + (" (forced past failed checks)" if receipt["forced"] else "")
    lines = [
        f"# Deletion request {receipt['request']['id']}: {outcome}",
        "",
        f"- When: {receipt['time']}; method: {receipt['method']['name'] or '–'}",
        f"- Forgotten: {_fmt(forgotten['records'])} records (sha256 of the set {_fmt(forgotten['records_sha256'])}); "
        f"already forgotten by earlier requests and skipped: {forgotten['already_forgotten']}",
        f"- Model: version {_fmt(model['version_before'])} ({_fmt(model['sha256_before'])[:16]}…) -> "
        f"version {_fmt(model['version_after'])} ({_fmt(model['sha256_after'])[:16]}…)",
        f"- Ledger entry {receipt['ledger']['seq']}, hash `{receipt['ledger']['entry_hash']}`",
        "",
    ]
    if receipt["evidence"]:
        lines += ["| evidence | before | after |", "|---|---|---|"]
        lines += [
            f"| {k} | {_fmt(v['before'])} | {_fmt(v['after'])} |" for k, v in receipt["evidence"].items()
        ]
        lines.append("")
    if receipt["checks"]:
        lines += ["| check | value | threshold | result |", "|---|---|---|---|"]
        for check in receipt["checks"]:
            lines.append(
                f"| {check['name']} | {_fmt(check['value'])} | {check['op']} {_fmt(check['threshold'])} | "
                f"{check['result']} |"
            )
        lines.append("")
    lines.append("Check it: `unmem store verify STORE --receipt receipt.json`.")
    return "\n".join(lines) + "\n"
