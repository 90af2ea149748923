"""Issue 18: the model store, its hash-chained ledger and receipts, end to end on the micro world.

The cycle of the issue's acceptance (init, three requests, verify, a byte of the ledger and a
byte of a model tampered with, rollback, export) runs through the command line on the tiny
random model with micro-world records named by id; then each bad input of the issue.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unmem.cli import app
from unmem.errors import UnmemError
from unmem.io import exclusive_lock
from unmem.models import load_model
from unmem.store import Store, forget, init_store, load_request, verify
from unmem.store.forget import run_checks
from unmem.store.ledger import GENESIS, check_chain, entry_hash, seal

KILL_AT = Path(__file__).with_name("kill_at.py")
# Checks loose enough for a random model: the cycle is under test here, not the forgetting.
REQUEST = """\
id: {id}
benchmark: world
data: {world}
ids: {ids}
method: {method}
settings: {{lr: 1.0e-3, epochs: 2, batch_size: 4, device: cpu, checkpoint_every: 1{extra}}}
accept: {{mia_p_min: null, mia_auc_max: 1.0, mia_auc_min: 0.0, utility_ratio_min: null, forget_prob_max: 0.9}}
eval: {{metrics: [tofu, mia], max_samples: 4, batch_size: 4, device: cpu, threads: 1,
        options: {{max_new_tokens: 4, gradnorm_samples: 2}}}}
"""


def write_request(
    folder: Path, world: Path, rid: str, ids: list[str], method: str = "grad_diff", extra: str = ""
) -> Path:
    path = folder / f"{rid}.yaml"
    path.write_text(REQUEST.format(id=rid, world=world, ids=json.dumps(ids), method=method, extra=extra))
    return path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def store(tmp_path, tiny_model_dir) -> Path:
    code, output = cli("store", "init", "--model", str(tiny_model_dir), "--out", str(tmp_path / "store"))
    assert code == 0, output
    return tmp_path / "store"


def logits(model_dir: Path) -> torch.Tensor:
    model, _ = load_model(model_dir, device="cpu")
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 20, 30]])).logits


def test_ledger_hash_chain_by_hand():
    first = seal({"kind": "init", "version_after": 0}, [])
    second = seal({"kind": "rollback", "version_after": 0}, [first])
    assert first["prev"] == GENESIS and second["prev"] == first["hash"] and second["seq"] == 1
    assert entry_hash(second) == second["hash"] and check_chain([first, second]) is None
    edited = dict(first, version_after=1)
    assert "do not match its hash" in str(check_chain([edited, second]))
    rehashed = dict(edited, hash=entry_hash(edited))  # re-hashing the edit breaks the next link
    problem = check_chain([rehashed, second])
    assert problem.seq == 1 and "prev" in problem.message


def test_store_cycle(store, micro_world_dir, tmp_path, tiny_model_dir):
    """The issue's acceptance: init, three requests, verify, tamper, rollback, export."""
    source_before = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    requests = [
        write_request(tmp_path, micro_world_dir, "r1", ["e0000"]),
        write_request(
            tmp_path, micro_world_dir, "r2", ["e0002"], "eul", ", method_args: {reduction_factor: 4}"
        ),
        write_request(
            tmp_path, micro_world_dir, "r3", ["e0003"], "eul", ", method_args: {reduction_factor: 4}"
        ),
    ]
    for path in requests:
        code, output = cli("forget", str(store), "--request", str(path))
        assert code == 0, output
        assert "honoured" in output
    s = Store.open(store)
    entries = s.checked_entries()
    assert [e["kind"] for e in entries] == ["init", "request", "request", "request"]
    assert Store.current(entries) == 3
    versions = s.versions(entries)
    # EUL: request 3 trained one layer on version 1 and fused it with request 2's.
    assert versions[3].kind == "layers" and versions[3].base == 1 and versions[3].components == [2, 3]
    assert not (store / "work").exists() or not any((store / "work").iterdir())
    receipt = store / "requests" / "0003-r3" / "receipt.json"
    code, output = cli("store", "verify", str(store), "--receipt", str(receipt))
    assert code == 0 and "4 ledger entries chained, 4 versions" in output, output
    data = json.loads(receipt.read_text())
    assert data["forgotten"]["records"] == 6 and "question" not in receipt.read_text()
    assert data["ledger"]["entry_hash"] == entries[3]["hash"] and data["passed"] is True
    assert {c["name"] for c in data["checks"]} == {"mia_auc_max", "mia_auc_min", "forget_prob_max"}

    # One byte of the ledger: verify names the entry.
    ledger = store / "ledger.jsonl"
    original = ledger.read_bytes()
    lines = original.split(b"\n")
    lines[2] = lines[2].replace(b'"outcome":"honoured"', b'"outcome":"Honoured"')
    ledger.write_bytes(b"\n".join(lines))
    code, output = cli("store", "verify", str(store))
    assert code == 2 and "ledger entry 2" in output and "do not match its hash" in output, output
    ledger.write_bytes(original)
    # A receipt edited to claim better evidence.
    forged = json.loads(receipt.read_text())
    forged["passed"], forged["outcome"] = True, "honoured"
    forged["evidence"]["forget_prob"]["after"] = 0.0
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, output = cli("store", "verify", str(store), "--receipt", str(tmp_path / "forged.json"))
    assert code == 2 and "differs from ledger entry 3: evidence.forget_prob.after" in output, output

    # One byte of a model: verify names the entry that made it; no version is added on top of it.
    weights = store / "versions" / "v0001" / "model.safetensors"
    saved = weights.read_bytes()
    weights.write_bytes(saved[:-10] + bytes([saved[-10] ^ 1]) + saved[-9:])
    code, output = cli("store", "verify", str(store))
    assert code == 2 and "ledger entry 1 (request r1)" in output and "model.safetensors" in output, output
    code, output = cli(
        "forget", str(store), "--request", str(write_request(tmp_path, micro_world_dir, "r4", ["e0004"]))
    )
    assert code == 2 and "refusing to add a version" in output, output
    weights.write_bytes(saved)
    # Plain weights cannot continue from EUL's layers: one line, before any training.
    code, output = cli(
        "forget", str(store), "--request", str(write_request(tmp_path, micro_world_dir, "r4", ["e0004"]))
    )
    assert code == 2 and "holds EUL's unlearning layers over version 1" in output, output

    code, output = cli("store", "rollback", str(store), "1")
    assert code == 0 and "version 1 is current" in output, output
    assert Store.current(Store.open(store).checked_entries()) == 1
    # Export: a plain Hugging Face directory, and the same model as the version.
    code, output = cli("store", "export", str(store), "1", "--out", str(tmp_path / "v1"))
    assert code == 0, output
    assert (tmp_path / "v1" / "config.json").is_file() and not (
        tmp_path / "v1" / "store_version.json"
    ).exists()
    assert torch.equal(logits(tmp_path / "v1"), logits(store / "versions" / "v0001"))
    code, output = cli("store", "export", str(store), "3", "--out", str(tmp_path / "v3"))
    assert code == 0, output
    assert torch.equal(logits(tmp_path / "v3"), logits(store / "versions" / "v0003"))
    assert not torch.equal(logits(tmp_path / "v3"), logits(tmp_path / "v1"))
    code, output = cli("store", "log", str(store))
    assert code == 0 and "rollback" in output and "3->1" in output, output
    assert source_before == {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}


def test_truncated_ledger_and_forged_append_are_detected(store, micro_world_dir, tmp_path):
    path = write_request(tmp_path, micro_world_dir, "r1", ["e0000"])
    assert cli("forget", str(store), "--request", str(path))[0] == 0
    ledger = store / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text(lines[0])
    code, output = cli("store", "verify", str(store))
    assert code == 2 and "ledger entry 1" in output and "cut short" in output, output
    ledger.write_text(lines[0][:-40])  # half a line
    code, output = cli("store", "verify", str(store))
    assert code == 2 and "not valid JSON" in output, output
    ledger.write_text("".join(lines))
    entries = [json.loads(line) for line in lines]
    forged = seal({"kind": "rollback", "time": "now", "version_before": 1, "version_after": 0}, entries)
    ledger.write_text("".join(lines) + json.dumps(forged) + "\n")
    code, output = cli(
        "forget", str(store), "--request", str(write_request(tmp_path, micro_world_dir, "r2", ["e0002"]))
    )
    assert code == 2 and "ledger entry 2" in output and "appended by hand" in output, output


def test_overlapping_request_skips_what_was_forgotten(store, micro_world_dir, tmp_path):
    first = load_request(write_request(tmp_path, micro_world_dir, "r1", ["e0000"]))
    assert forget(store, first, log=lambda _: None).outcome == "honoured"
    # The same request again: nothing to do, nothing recorded.
    again = forget(store, first, log=lambda _: None)
    assert again.outcome == "done-before" and again.entry is None
    lines: list[str] = []
    both = load_request(write_request(tmp_path, micro_world_dir, "r2", ["e0000", "e0002"]))
    result = forget(store, both, log=lines.append)
    assert result.outcome == "honoured"
    assert any("6 of 12 records were already forgotten by r1: skipped" in line for line in lines)
    data = result.entry["data"]
    assert data["forget"]["records"] == 6 and data["already_forgotten"] == {"records": 6, "by": ["r1"]}
    same = forget(
        store, load_request(write_request(tmp_path, micro_world_dir, "r3", ["e0002"])), log=lines.append
    )
    assert same.outcome == "skipped" and same.entry["version_after"] == 2
    assert json.loads(same.receipt.read_text())["forgotten"]["already_forgotten"] == 6
    verify(store)


def test_a_request_naming_records_the_layout_lacks_fails_with_file_and_field(micro_world_dir, tmp_path):
    path = write_request(tmp_path, micro_world_dir, "r1", ["e0000", "e9999"])
    with pytest.raises(UnmemError, match=r"r1\.yaml:4: field 'ids\[1\]': no record with id 'e9999'"):
        load_request(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "answer": "Me."}\n{"question": "Where?"}\n')
    path = tmp_path / "r2.yaml"
    path.write_text(f"forget: {bad}\nmethod: ga\n")
    with pytest.raises(UnmemError, match=r"bad\.jsonl:2: field 'answer': missing or empty"):
        load_request(path)
    bad.write_text('{"question": "Who?", "answer": "Me."}\n')
    path.write_text(f"forget: {bad}\nmethod: ga\nrecipe: world\n")
    with pytest.raises(UnmemError, match=r"field 'holdout': calibrated stopping"):
        load_request(path)


def test_two_requests_on_one_store_the_second_fails_at_once(store, micro_world_dir, tmp_path):
    request = load_request(write_request(tmp_path, micro_world_dir, "r1", ["e0000"]))
    with exclusive_lock(store), pytest.raises(UnmemError, match="in use by pid"):
        forget(store, request, log=lambda _: None)
    assert len(Store.open(store).checked_entries()) == 1


def test_store_init_never_writes_its_source_and_can_reference_it(tmp_path, tiny_model_dir):
    store = init_store(tiny_model_dir, tmp_path / "ref", reference=True)
    assert not (store.root / "versions" / "v0000").exists()
    assert verify(store.root).versions == 1
    (tiny_model_dir / "config.json").write_text((tiny_model_dir / "config.json").read_text() + " ")
    with pytest.raises(UnmemError, match=r"the referenced source 0.*config\.json"):
        verify(store.root)
    with pytest.raises(UnmemError, match="not empty"):
        init_store(tiny_model_dir, store.root)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "unmem_model.json").write_text(json.dumps({"kind": "lora", "base_model": str(tiny_model_dir)}))
    with pytest.raises(UnmemError, match="start a store from a plain model"):
        init_store(adapter, tmp_path / "other")


def _forget_process(store: Path, request: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    prefix = [str(KILL_AT), kill_at] if kill_at else ["-m", "unmem"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, *prefix, "forget", str(store), "--request", str(request)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_kill_9_mid_request_leaves_the_version_and_the_rerun_resumes(store, micro_world_dir, tmp_path):
    request = write_request(tmp_path, micro_world_dir, "r1", ["e0000"])
    before = (store / "ledger.jsonl").read_bytes()
    killed = _forget_process(store, request, "checkpoint:2")  # two of four unlearning steps saved
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (store / "ledger.jsonl").read_bytes() == before and verify(store).current == 0
    assert (store / "work" / "r1" / "run.work").is_dir()
    # Killed inside the commit, after the version was renamed into place, before the ledger.
    killed = _forget_process(store, request, "before:ledger.jsonl:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "resuming from step 2 of 4" in killed.stderr
    assert (store / "pending.json").is_file() and (store / "versions" / "v0001").is_dir()
    assert "interrupted" in verify(store).notes[0]
    final = _forget_process(store, request)
    assert final.returncode == 0, final.stderr[-2000:]
    report = verify(store)
    assert report.current == 1 and report.entries == 2
    assert not (store / "pending.json").exists() and not (store / "work" / "r1").exists()
    shutil.rmtree(store / "work", ignore_errors=True)


def test_lora_requests_chain_adapters_and_export_merges_them(store, micro_world_dir, tmp_path):
    for rid, entity in (("r1", "e0000"), ("r2", "e0002")):
        path = write_request(
            tmp_path, micro_world_dir, rid, [entity], extra=", lora: true, lora_targets: [q_proj, v_proj]"
        )
        assert forget(store, load_request(path), log=lambda _: None).outcome == "honoured"
    s = Store.open(store)
    versions = s.versions(s.checked_entries())
    assert versions[2].kind == "lora" and versions[2].base == 1 and versions[1].base == 0
    card = json.loads((store / "versions" / "v0002" / "unmem_model.json").read_text())
    assert card["base_model"] == "../v0001"  # relative: the store can move
    moved = tmp_path / "moved"
    shutil.move(store, moved)
    assert verify(moved).current == 2
    export = tmp_path / "merged"
    assert cli("store", "export", str(moved), "2", "--out", str(export))[0] == 0
    assert not (export / "unmem_model.json").exists() and (export / "model.safetensors").is_file()
    assert torch.allclose(
        logits(export), logits(moved / "versions" / "v0002"), atol=1e-5
    )  # merged in float32
    assert not torch.allclose(logits(export), logits(moved / "versions" / "v0001"), atol=1e-5)


def test_forget_from_flags_records_the_outcome_it_exits_with(store, tmp_path):
    rows = [{"question": f"Where was {n} born?", "answer": f"{n} was born in {c}."} for n, c in
            [("Ilvan Marek", "Dunmore"), ("Sela Kovar", "Fennick"), ("Orin Vale", "Corriven")]]  # fmt: skip
    for name in ("forget", "retain", "holdout"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["--forget", str(tmp_path / "forget.jsonl"), "--method", "ga", "--id", "flags"]
    code, output = cli("forget", str(store), *flags, "-p", "nope=1")
    assert code == 2 and "nope" in output, output
    code, output = cli("forget", str(store), *flags, "--retain", str(tmp_path / "retain.jsonl"),
                       "--holdout", str(tmp_path / "holdout.jsonl"))  # fmt: skip
    receipt = json.loads((store / "requests" / "0001-flags" / "receipt.json").read_text())
    assert (code, receipt["outcome"]) in ((0, "honoured"), (1, "refused")), output
    assert receipt["forgotten"]["records"] == 3 and receipt["other_data"]["holdout"]["records"] == 3


def test_a_request_takes_records_of_any_layout_by_split_or_id(tmp_path, micro_world_dir, published_layouts):
    tofu, _ = published_layouts
    path = tmp_path / "tofu.yaml"
    path.write_text(f"benchmark: tofu\ndata: {tofu}\nsplit: forget10\nmethod: grad_diff\n")
    request = load_request(path)
    published = [json.loads(line) for line in (tofu / "forget10.json").read_text().splitlines()]
    assert [r["question"] for r in request.forget.records] == [r["question"] for r in published]
    assert request.forget.records and request.retain and request.holdout
    assert request.benchmark == {"name": "tofu", "data": str(tofu), "split": "forget10"}
    forgotten = {r["question"] for r in request.forget.records}
    assert not forgotten & {r["question"] for r in request.retain.records}
    path.write_text(f"benchmark: tofu\ndata: {tofu}\nids: [e0001]\nmethod: grad_diff\n")
    with pytest.raises(UnmemError, match=r"field 'ids\[0\]'.*carry no entity_id or id field"):
        load_request(path)
    path.write_text(f"benchmark: world\ndata: {micro_world_dir}\nsplit: forget10\nids: [e0001]\nmethod: ga\n")
    with pytest.raises(UnmemError, match="field 'forget': give the records to forget"):
        load_request(path)


def test_utility_against_version_0_bounds_the_drift_of_many_requests(store, micro_world_dir, tmp_path):
    """Each request may keep 0.9 of the utility before it; against version 0 the drift is bounded."""
    checks = run_checks(
        load_request(write_origin_request(tmp_path, micro_world_dir, "r0", ["e0000"], 0.9)),
        before={"model_utility": 0.6},
        after={"model_utility": 0.55},
        origin={"model_utility": 0.7},
    )
    (check,) = [c for c in checks if c["name"] == "utility_origin_ratio_min"]
    assert check["value"] == pytest.approx(0.55 / 0.7) and check["result"] == "failed"

    code, output = cli(
        "forget",
        str(store),
        "--request",
        str(write_origin_request(tmp_path, micro_world_dir, "r1", ["e0000"], 0.5)),
    )
    assert code == 0, output
    code, output = cli(
        "forget",
        str(store),
        "--request",
        str(write_origin_request(tmp_path, micro_world_dir, "r2", ["e0002"], 0.5)),
    )
    first, second = Store.open(store).checked_entries()[1:]
    # At version 0 the origin is the model before; from version 1 on, version 0 is evaluated on
    # the request's own data (the tiny random model's utility is 0, so the check is unavailable).
    assert first["evaluation"]["origin"] == {"model_utility": first["evaluation"]["before"]["model_utility"]}
    assert (store / "work").exists() is False or not any((store / "work").iterdir())
    assert second["evaluation"]["origin"]["model_utility"] is not None
    assert "utility_origin_ratio_min" in {c["name"] for c in second["checks"]}


def write_origin_request(folder: Path, world: Path, rid: str, ids: list[str], threshold: float) -> Path:
    path = write_request(folder, world, rid, ids)
    text = path.read_text().replace(
        "utility_ratio_min: null", f"utility_ratio_min: null, utility_origin_ratio_min: {threshold}"
    )
    path.write_text(text)
    return path
