"""``unmem forget STORE --request REQ.yaml``: honour a deletion request, or say why not.

Under the store's lock, with the ledger and the current version's files verified first:

1. records an earlier request of the current version's line already forgot are reported and
   left out (all of them: the request is recorded as skipped, nothing is trained);
2. the method unlearns the rest from the current version (``unmem.train.unlearn``); EUL trains
   one new layer on the version its layers sit on and fuses it with the earlier requests'
   (``unmem.store.fusion``);
3. the current version and the result are evaluated on the request's data (``unmem.evaluation``);
4. the acceptance checks decide: passed (or ``--force``, recorded) adds a version; failed records
   the refusal and keeps the current version;
5. the ledger entry, the version and the receipt are committed together (``Store.commit``).

Everything in between lives in ``STORE/work/ID/``: a killed request leaves the store at its
version, and running it again reuses the finished steps (and unlearning's checkpoints) when the
request and the version are the same, or starts afresh when not.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import read_json, write_json, write_jsonl, write_text_atomic
from unmem.store.fusion import base_reference, check_structure, stage_layers
from unmem.store.receipt import receipt_from_entry, render_markdown
from unmem.store.request import CHECKS, Request, record_hash
from unmem.store.store import Store, now
from unmem.store.versions import Version

CARD_KIND = {"lora": "lora", "method_layers": "layers"}


@dataclass
class Outcome:
    """What ``forget`` did: ``entry`` is None when the request had been honoured already."""

    outcome: str  # honoured | refused | skipped | done-before
    entry: dict[str, Any] | None
    receipt: Path | None
    message: str


def forget(store_dir: str | Path, request: Request, *, force: bool = False, log: Any = print) -> Outcome:
    store = Store.open(store_dir)
    with store.locked():
        entries = store.checked_entries()
        versions = store.versions(entries)
        current = versions[Store.current(entries)]
        store.check_lineage(current.number, versions)
        forgotten = forgotten_records(entries, versions, current.number)
        hashes = [record_hash(r) for r in request.forget.records]
        earlier = {forgotten[h] for h in hashes if h in forgotten}
        if earlier == {request.id} and all(h in forgotten for h in hashes):
            entry = next(e for e in entries if (e.get("made") or {}).get("request") == request.id)
            message = f"request {request.id} was honoured by ledger entry {entry['seq']} (version {entry['version_after']}); nothing to do"
            return Outcome("done-before", None, store.request_dir(entry) / "receipt.json", message)
        fresh = [r for r, h in zip(request.forget.records, hashes, strict=True) if h not in forgotten]
        skipped = {"records": len(hashes) - len(fresh), "by": sorted(earlier)}
        if skipped["records"]:
            log(
                f"{skipped['records']} of {len(hashes)} records were already forgotten by {', '.join(skipped['by'])}: skipped"
            )
        if not fresh:
            entry = _commit(store, body_skipped(request, current, skipped), None, {})
            return Outcome(
                "skipped",
                entry,
                store.request_dir(entry) / "receipt.json",
                "every record was already forgotten",
            )
        log(f"request {request.id}: {len(fresh)} records to forget")
        return _honour(store, request, current, versions, fresh, skipped, force, log)


def forgotten_records(
    entries: list[dict[str, Any]], versions: dict[int, Version], number: int
) -> dict[str, str]:
    """Record hash -> request id, for every request that made the versions ``number`` descends from."""
    found: dict[str, str] = {}
    version: int | None = number
    while version is not None:
        made = versions[version]
        entry = entries[made.entry]
        if entry["kind"] == "request":
            found |= dict.fromkeys(entry["data"]["forget"]["record_hashes"], entry["request"]["id"])
        version = made.parent
    return found


def _honour(
    store: Store,
    request: Request,
    current: Version,
    versions: dict[int, Version],
    fresh: list[dict[str, Any]],
    skipped: dict[str, Any],
    force: bool,
    log: Any,
) -> Outcome:
    from unmem.methods.registry import get_method

    spec = get_method(request.config.method)
    _check_continuation(spec, current, request)
    start = time.perf_counter()
    work = _work_dir(store, request, current, fresh)
    paths = _write_data(work, request, fresh)
    config = _with_holdout(request.config, paths.get("holdout"))
    # EUL trains its new layer on the version the layers sit on; every other method continues.
    base = versions[current.base] if current.kind == "layers" and current.base is not None else current
    run = _unlearn(work, config, paths, base if spec.prepare_model is not None else current, log)
    timing = {"unlearn_s": round(float(read_json(run / "summary.json").get("train_seconds") or 0.0), 3)}
    number = max(versions) + 1
    stage = store.stage_dir(number)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    fused_at = time.perf_counter()
    version, extra = _stage_version(run, stage, number, current, base, versions, request.id)
    timing["fuse_s"] = round(time.perf_counter() - fused_at, 3)
    made = store.make_version_record(version, stage, extra)
    before = _evaluate(current.path, work, "eval-before", request)
    after = _evaluate(stage, work, "eval-after", request)
    origin = _origin_utility(versions[0], current, before, work, request)
    checks = run_checks(request, before, after, origin)
    passed = all(c["result"] != "failed" for c in checks) and any(c["result"] == "passed" for c in checks)
    outcome = "honoured" if passed or force else "refused"
    timing["total_s"] = round(time.perf_counter() - start, 3)
    body = {
        "kind": "request",
        "time": now(),
        "request": _request_info(request),
        "outcome": outcome,
        "forced": bool(force and not passed),
        "data": _data_info(request, fresh, skipped),
        "method": _method_info(request, config, run),
        "version_before": current.number,
        "version_after": number if outcome == "honoured" else current.number,
        "model_before": current.digest["sha256"],
        "evaluation": {"before": before, "after": after, "retain_model": _retain_model(request)}
        | ({"origin": origin} if origin is not None else {}),
        "checks": checks,
        "passed": passed,
        "training": _training(run),
        "timing": timing,
    } | ({"made": made} if outcome == "honoured" else {})
    entry = _commit(store, body, stage if outcome == "honoured" else None, _summaries(work))
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return Outcome(outcome, entry, store.request_dir(entry) / "receipt.json", _verdict(request, entry))


def _check_continuation(spec: Any, current: Version, request: Request) -> None:
    """Plain weights cannot continue from EUL's layers; fused layers must share one shape."""
    if current.kind != "layers":
        return
    if spec.prepare_model is None:
        raise UnmemError(
            f"version {current.number} holds EUL's unlearning layers over version {current.base}; method "
            f"'{spec.name}' trains plain weights and cannot continue from them. Use eul, or "
            f"`unmem store rollback {current.base}` first"
        )
    check_structure(current, request.config.method_args)


def _with_holdout(config: Any, holdout: Path | None) -> Any:
    """Calibrated stopping measures against the request's holdout set."""
    if config.calibrated_stop is None:
        return config
    return config.model_copy(
        update={"calibrated_stop": config.calibrated_stop.model_copy(update={"holdout": holdout})}
    )


def _unlearn(work: Path, config: Any, paths: dict[str, Path], start_from: Version, log: Any) -> Path:
    """The request's run (``work/run``), or the one an interrupted attempt finished (its
    checkpoints, if any, resume it)."""
    from unmem.train import unlearn

    run = work / "run"
    if not (run / "summary.json").is_file():
        log(f"unlearning with {config.method} from version {start_from.number}")
        unlearn(start_from.path, paths["forget"], run, config, retain_path=paths.get("retain"), resume=True)
    return run


def _summaries(work: Path) -> dict[str, Path]:
    """What the request's folder keeps besides the receipt: summaries only, no records."""
    run = work / "run"
    return {
        "eval_before.json": work / "eval-before" / "summary.json",
        "eval_after.json": work / "eval-after" / "summary.json",
        "run_summary.json": run / "summary.json",
        "train_log.jsonl": run / "train_log.jsonl",
        "run_config.json": run / "run_config.json",
    }


def _verdict(request: Request, entry: dict[str, Any]) -> str:
    if entry["outcome"] == "refused":
        failed = ", ".join(
            f"{c['name']} {c['value']:.3g} (needs {c['op']} {c['threshold']})"
            for c in entry["checks"]
            if c["result"] == "failed"
        )
        verdict = (
            f"refused: {failed or 'no check could be evaluated'} (the store stays at version "
            f"{entry['version_before']}; --force adds it anyway)"
        )
    else:
        verdict = "honoured" + (" (forced past failed checks)" if entry["forced"] else "")
    return f"request {request.id} {verdict}; version {entry['version_after']} is current"


def _work_dir(store: Store, request: Request, current: Version, fresh: list[dict[str, Any]]) -> Path:
    """The request's work folder, kept from an interrupted run of the same request on the same version."""
    work = store.work_dir(request.id)
    key = {
        "request": request.key(),
        "version": current.digest["sha256"],
        "records": sorted(map(record_hash, fresh)),
    }
    key_path = work / "key.json"
    if work.exists() and (not key_path.is_file() or read_json(key_path) != key):
        shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        write_json(key_path, key)
    return work


def _write_data(work: Path, request: Request, fresh: list[dict[str, Any]]) -> dict[str, Path]:
    """The request's sets as a `files` layout (what unlearning trains on and evaluation reads)."""
    data = work / "data"
    sets: dict[str, list[dict[str, Any]]] = {"forget": fresh}
    if request.retain is not None:
        sets["retain"] = request.retain.records
    if request.holdout is not None:
        sets["holdout"] = request.holdout.records
    sets |= request.utility
    paths = {}
    for name, records in sets.items():
        path = data / f"{name}.jsonl"
        if not path.is_file():
            write_jsonl(path, records)
        paths[name] = path
    return paths


def _stage_version(
    run: Path,
    stage: Path,
    number: int,
    current: Version,
    base: Version,
    versions: dict[int, Version],
    request_id: str,
) -> tuple[Version, dict[str, Any]]:
    """Build the new version in ``stage`` from the run's output: weights, an adapter or fused layers."""
    from unmem.models import MODEL_CARD

    card_path = run / "model" / MODEL_CARD
    card = read_json(card_path) if card_path.is_file() else {}
    kind = CARD_KIND.get(card.get("kind"), "full")
    if kind == "layers":
        components = [versions[n] for n in current.components] if current.kind == "layers" else []
        extra = stage_layers(run, stage, base, components, base_reference(base, stage))
        version = Version(number, "layers", stage, entry=-1, digest={}, parent=current.number, base=base.number,
                          components=[*current.components, number] if current.kind == "layers" else [number],
                          request=request_id)  # fmt: skip
        return version, {"fusion": extra}
    for path in (run / "model").iterdir():
        if path.is_file():
            shutil.copy2(path, stage / path.name)
    if kind == "lora":
        write_json(stage / MODEL_CARD, card | {"base_model": base_reference(current, stage)})
    version = Version(number, kind, stage, entry=-1, digest={}, parent=current.number,
                      base=current.number if kind == "lora" else None, request=request_id)  # fmt: skip
    return version, {}


def _evaluate(model: Path, work: Path, name: str, request: Request) -> dict[str, Any]:
    from unmem.evaluation import evaluate
    from unmem.results import EvalSummary

    out = evaluate(
        model,
        benchmark="files",
        data=work / "data",
        split="forget",
        out_dir=work / name,
        retain_model=request.retain_model,
        retain_cache_dir=work / "retain_cache",
        config=request.eval,
    )
    metrics = EvalSummary.read(out / "summary.json").metrics
    return metrics | {"mia_loss_p": membership_p(out / "per_sample" / "mia.jsonl")}


def _origin_utility(
    origin: Version, current: Version, before: dict[str, Any], work: Path, request: Request
) -> dict[str, Any] | None:
    """Version 0's model utility on this request's data, when a check reads it."""
    if request.accept.utility_origin_ratio_min is None:
        return None
    if current.number == origin.number:
        return {"model_utility": before.get("model_utility")}
    from unmem.evaluation import evaluate
    from unmem.results import EvalSummary

    out = evaluate(
        origin.path,
        benchmark="files",
        data=work / "data",
        split="forget",
        out_dir=work / "eval-origin",
        config=request.eval.model_copy(update={"metrics": ["tofu"]}),
    )
    return {"model_utility": EvalSummary.read(out / "summary.json").metrics.get("model_utility")}


def membership_p(rows: Path) -> float | None:
    """Two-sided Mann-Whitney p of the LOSS attack's forget scores against the holdout's (None
    without both): how surely the model still tells the forgotten records from unseen ones."""
    from unmem.io import iter_jsonl
    from unmem.train.stopping import membership_auc

    scores: dict[str, list[float]] = {"forget": [], "holdout": []}
    if rows.is_file():
        for _, row in iter_jsonl(rows):
            if row.get("set") in scores and row.get("loss") is not None:
                scores[row["set"]].append(float(row["loss"]))
    if not scores["forget"] or not scores["holdout"]:
        return None
    return membership_auc(scores["forget"], scores["holdout"])[1]


def run_checks(
    request: Request,
    before: dict[str, Any],
    after: dict[str, Any],
    origin: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each acceptance check with its value, threshold and result (passed, failed or unavailable)."""
    values = dict(after)
    for metric, reference in (("model_utility_ratio", before), ("model_utility_origin_ratio", origin)):
        if after.get("model_utility") is not None and (reference or {}).get("model_utility"):
            values[metric] = after["model_utility"] / reference["model_utility"]
    checks = []
    for name, threshold in request.accept.model_dump().items():
        if threshold is None:
            continue
        metric, op = CHECKS[name]
        value = values.get(metric)
        if value is None:
            result = "unavailable"
        else:
            result = "passed" if (value <= threshold if op == "<=" else value >= threshold) else "failed"
        checks.append(
            {
                "name": name,
                "metric": metric,
                "value": value,
                "op": op,
                "threshold": threshold,
                "result": result,
            }
        )
    return checks


def _request_info(request: Request) -> dict[str, Any]:
    info: dict[str, Any] = {"id": request.id, "note": request.note}
    if request.source is not None:
        info["file"] = str(request.source)
    if request.benchmark is not None:
        info["benchmark"] = request.benchmark
    return info


def _data_info(request: Request, fresh: list[dict[str, Any]], skipped: dict[str, Any]) -> dict[str, Any]:
    from unmem.store.request import DataSet

    forget = DataSet(fresh, request.forget.file).describe()
    forget["record_hashes"] = sorted(map(record_hash, fresh))
    info: dict[str, Any] = {"forget": forget, "already_forgotten": skipped}
    for name in ("retain", "holdout"):
        dataset = getattr(request, name)
        if dataset is not None:
            info[name] = dataset.describe()
    return info


def _method_info(request: Request, config: Any, run: Path) -> dict[str, Any]:
    resolved = read_json(run / "run_config.json")
    settings = config.model_dump(mode="json")
    if settings.get("calibrated_stop"):
        settings["calibrated_stop"]["holdout"] = "(the request's holdout set)"
    return {
        "name": config.method,
        "recipe": request.recipe,
        "settings": settings,
        "method_config": resolved.get("method_config"),
    }


def _training(run: Path) -> dict[str, Any]:
    summary = read_json(run / "summary.json")
    keys = ("steps", "published_step", "stop_reason", "train_seconds", "tokens", "trainable_parameters")
    return {k: summary.get(k) for k in keys}


def _retain_model(request: Request) -> dict[str, Any] | None:
    if request.retain_model is None:
        return None
    from unmem.models import model_hash

    return {"path": str(request.retain_model), "hash": model_hash(request.retain_model)}


def body_skipped(request: Request, current: Version, skipped: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "request",
        "time": now(),
        "request": _request_info(request),
        "outcome": "skipped",
        "forced": False,
        "data": _data_info(request, [], skipped),
        "method": {"name": request.config.method, "recipe": request.recipe},
        "version_before": current.number,
        "version_after": current.number,
        "model_before": current.digest["sha256"],
        "checks": [],
        "passed": None,
    }


def _commit(
    store: Store, body: dict[str, Any], stage: Path | None, summaries: dict[str, Path]
) -> dict[str, Any]:
    """The entry, its version and the request's folder (receipt and summaries, no records), together."""

    def write_request(entry: dict[str, Any], folder: Path) -> None:
        receipt = receipt_from_entry(entry, store.info["id"])
        write_json(folder / "receipt.json", receipt)
        write_text_atomic(folder / "receipt.md", render_markdown(receipt))
        for name, path in summaries.items():
            if path.is_file():
                shutil.copy2(path, folder / name)

    return store.commit(body, stage, write_request)
