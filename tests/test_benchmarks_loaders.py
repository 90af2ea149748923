"""Loaders of evaluation data: the world, TOFU and MUSE layouts written in tmp as published, their errors."""

import json

import pytest

from unmem.data.benchmarks import (
    KNOWMEM_SHOT_POOL,
    EvalData,
    get_benchmark,
    load_benchmark,
    load_muse,
    load_tofu,
    load_world,
    nlu_items,
)
from unmem.data.world import WorldConfig, generate_world
from unmem.errors import UnmemError
from unmem.evaluation import EvalConfig, EvalInputs, get_family
from unmem.io import read_records


def supports(data: EvalData, family: str) -> bool:
    """Whether a metric family can run on the data (families declare what they need)."""
    return get_family(family).supports(EvalInputs(data, EvalConfig()))


def _perturbed(i: int, *, paraphrase: bool = True) -> dict:
    row = {
        "question": f"Who wrote book {i}?",
        "answer": f"Book {i} was written by Author {i}.",
        "perturbed_answer": [f"Author {i + k} wrote book {i}." for k in (1, 2, 3)],
    }
    if paraphrase:
        row["paraphrased_answer"] = f"Author {i} wrote book {i}."
    return row


def _write_json(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def tofu_dir(tmp_path):
    root = tmp_path / "tofu"
    _write_json(root / "forget10_perturbed.json", [_perturbed(i) for i in range(3)])
    _write_jsonl(root / "retain_perturbed.jsonl", [_perturbed(i) for i in range(150)])
    # TOFU's real-authors file carries option1..4 and no paraphrase: neither is needed.
    real = [
        _perturbed(i, paraphrase=False) | {f"option{k}": f"Author {k}" for k in range(1, 5)} for i in range(4)
    ]
    _write_json(root / "real_authors_perturbed.json", real)
    _write_json(root / "world_facts_perturbed.json", [_perturbed(i) for i in range(5)])
    _write_json(root / "holdout10.json", [{"question": f"q{i}?", "answer": f"a{i}."} for i in range(3)])
    return root


def test_tofu_layout_loads(tofu_dir):
    data = load_tofu(tofu_dir, "forget10")
    assert data.benchmark == "tofu"
    sizes = data.sizes()
    assert sizes["qa/forget"] == 3 and sizes["qa/holdout"] == 3
    assert sizes["qa/real_world"] == 4 and sizes["qa/world_facts"] == 5
    # retain subset: the first max(len(forget), 100) retain questions
    assert sizes["qa/retain"] == 100
    assert data.qa["retain"][0]["question"] == "Who wrote book 0?"
    assert data.has_truth_ratio("real_world")
    assert data.membership_kind() == "qa"
    assert {f for f in ("tofu", "muse", "mia", "extraction", "utility") if supports(data, f)} == {
        "tofu",
        "muse",
        "mia",
        "extraction",
        "utility",
    }
    assert not data.verbmem and not data.privleak  # PrivLeak falls back to QA forget vs holdout
    assert len(data.nlu) >= 40
    assert any("general_eval" in note for note in data.notes)  # optional and absent


def test_tofu_optional_files_may_be_missing(tofu_dir):
    (tofu_dir / "real_authors_perturbed.json").unlink()
    (tofu_dir / "holdout10.json").unlink()
    data = load_tofu(tofu_dir, "forget10")
    assert data.qa["real_world"] == [] and data.qa["holdout"] == []
    assert data.membership_kind() is None
    assert not supports(data, "mia")


def test_tofu_missing_field_names_file_line_and_field(tofu_dir):
    rows = [_perturbed(0), _perturbed(1, paraphrase=False)]
    (tofu_dir / "forget10_perturbed.json").unlink()
    _write_jsonl(tofu_dir / "forget10_perturbed.jsonl", rows)
    with pytest.raises(UnmemError, match=r"forget10_perturbed\.jsonl:2: field 'paraphrased_answer'"):
        load_tofu(tofu_dir, "forget10")


def test_tofu_perturbed_answer_must_be_a_list(tofu_dir):
    rows = [_perturbed(0) | {"perturbed_answer": "just one"}]
    _write_json(tofu_dir / "forget10_perturbed.json", rows)
    with pytest.raises(UnmemError, match=r"forget10_perturbed\.json:1: field 'perturbed_answer'"):
        load_tofu(tofu_dir, "forget10")


def test_tofu_missing_file_names_the_file(tofu_dir):
    (tofu_dir / "retain_perturbed.jsonl").unlink()
    with pytest.raises(UnmemError, match=r"retain_perturbed\{\.jsonl,\.json,\.parquet\}: file not found"):
        load_tofu(tofu_dir, "forget10")
    with pytest.raises(UnmemError, match=r"forget05_perturbed.*file not found"):
        load_tofu(tofu_dir, "forget05")
    with pytest.raises(UnmemError, match="TOFU data directory not found"):
        load_tofu(tofu_dir / "nope")


@pytest.fixture
def muse_dir(tmp_path):
    root = tmp_path / "muse"
    _write_json(
        root / "verbmem/forget.json", [{"prompt": f"Once {i}", "gt": f"upon a time {i}"} for i in range(4)]
    )
    _write_json(
        root / "knowmem/forget_qa.json", [{"question": f"fq{i}?", "answer": f"fa{i}"} for i in range(5)]
    )
    _write_json(
        root / "knowmem/retain_qa.json", [{"question": f"rq{i}?", "answer": f"ra{i}"} for i in range(30)]
    )
    # The MUSE repository stores PrivLeak passages as a JSON list of strings; HF as records.
    _write_json(root / "privleak/forget.json", [f"forget passage {i}" for i in range(6)])
    _write_jsonl(root / "privleak/holdout.jsonl", [{"text": f"holdout passage {i}"} for i in range(7)])
    return root


def test_muse_layout_loads(muse_dir):
    data = load_muse(muse_dir)
    assert len(data.verbmem["forget"]) == 4
    assert data.privleak["forget"][0] == "forget passage 0"
    assert data.privleak["holdout"][6] == "holdout passage 6"
    # Without retain_qa_icl the shots are the first 10 retain QA, left out of the retain set.
    assert [s["question"] for s in data.knowmem_shots] == [f"rq{i}?" for i in range(KNOWMEM_SHOT_POOL)]
    assert data.knowmem["retain"][0]["question"] == f"rq{KNOWMEM_SHOT_POOL}?"
    assert data.membership_kind() == "text"
    assert supports(data, "muse") and supports(data, "mia") and not supports(data, "tofu")


def test_muse_icl_file_gives_the_shots(muse_dir):
    _write_json(muse_dir / "knowmem/retain_qa_icl.json", [{"question": "icl?", "answer": "yes"}])
    data = load_muse(muse_dir)
    assert data.knowmem_shots == [{"question": "icl?", "answer": "yes"}]
    assert len(data.knowmem["retain"]) == 30


def test_muse_missing_field_and_file(muse_dir):
    _write_json(muse_dir / "knowmem/forget_qa.json", [{"question": "q?", "answer": "a"}, {"question": "q2?"}])
    with pytest.raises(UnmemError, match=r"forget_qa\.json:2: field 'answer'"):
        load_muse(muse_dir)
    _write_json(muse_dir / "knowmem/forget_qa.json", [{"question": "q?", "answer": "a"}])
    (muse_dir / "privleak/holdout.jsonl").unlink()
    with pytest.raises(UnmemError, match=r"privleak/holdout\{.*\}: file not found"):
        load_muse(muse_dir)


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory):
    return generate_world(WorldConfig.from_preset("micro"), tmp_path_factory.mktemp("w") / "world")


def test_world_loads_only_the_split(micro_world):
    data = load_benchmark("world", micro_world, "forget10")
    forget_ids = {r["entity_id"] for r in data.qa["forget"]}
    holdout_ids = {r["entity_id"] for r in data.qa["holdout"]}
    assert forget_ids and holdout_ids and not forget_ids & holdout_ids
    assert {r["entity_id"] for r in data.verbmem["forget"]} == forget_ids
    assert {r["entity_id"] for r in data.verbmem["holdout"]} == holdout_ids
    assert {r["entity_id"] for r in data.private} == forget_ids
    assert len(data.privleak["forget"]) == len(data.verbmem["forget"])
    passage = data.verbmem["forget"][0]
    assert data.privleak["forget"][0] == f"{passage['prompt']} {passage['gt']}"
    # KnowMem shots never appear among the scored retain questions.
    shots = {s["question"] for s in data.knowmem_shots}
    assert shots and not shots & {r["question"] for r in data.knowmem["retain"]}
    assert all(supports(data, f) for f in ("tofu", "muse", "mia", "extraction", "utility"))


def test_world_fingerprint_and_limit(micro_world):
    data = load_world(micro_world, "forget10")
    small = data.limited(2)
    assert all(len(v) <= 2 for v in small.qa.values())
    assert len(small.nlu) == 2 and small.knowmem_shots == data.knowmem_shots
    assert small.content_hash() == data.content_hash()
    assert small.fingerprint() != data.fingerprint()
    assert load_world(micro_world, "forget10").fingerprint() == data.fingerprint()
    with pytest.raises(UnmemError, match="max_samples must be >= 1"):
        data.limited(0)


def test_world_unknown_split_and_benchmark(micro_world):
    with pytest.raises(UnmemError, match="unknown forget split 'retain90'; known: forget"):
        load_world(micro_world, "retain90")
    with pytest.raises(UnmemError, match="unknown benchmark 'tofoo'; known: world, tofu, muse, files"):
        load_benchmark("tofoo", micro_world)


def test_nlu_items_are_valid():
    items = nlu_items()
    assert len(items) >= 40
    kinds = {item["kind"] for item in items}
    assert kinds == {"capital", "author", "commonsense"}
    assert sum(item["kind"] == "commonsense" for item in items) >= 20
    for item in items:
        assert 0 <= item["answer"] < len(item["choices"]) and len(set(item["choices"])) == len(
            item["choices"]
        )
    assert len({item["answer"] for item in items}) > 1  # the gold option is not always first


def test_eval_data_defaults_are_empty(tmp_path):
    data = EvalData("tofu", tmp_path, "forget10")
    assert data.membership_kind() is None and not supports(data, "tofu") and not supports(data, "utility")


def _write_json_lines(path, rows):
    """TOFU's published format: JSON Lines in a file named .json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def published_tofu_dir(tmp_path):
    """TOFU as the hub publishes it: one `.json` file of JSON Lines per config, with TOFU's own
    extra fields (paraphrased_question; option1..4 on real authors)."""
    root = tmp_path / "tofu-hub"
    qa = [{"question": f"Who wrote book {i}?", "answer": f"Author {i}."} for i in range(200)]
    perturbed = [_perturbed(i) | {"paraphrased_question": f"Book {i} is by whom?"} for i in range(200)]
    real = [_perturbed(i, paraphrase=False) | {f"option{k}": f"A{k}" for k in range(1, 5)} for i in range(4)]
    files = {
        "forget10": qa[:20],
        "retain90": qa[20:],
        "forget10_perturbed": perturbed[:20],
        "retain_perturbed": perturbed[20:],
        "real_authors_perturbed": real,
        "world_facts_perturbed": real,
        "full": qa,
    }
    for name, rows in files.items():
        _write_json_lines(root / f"{name}.json", rows)
    return root


def test_published_tofu_json_lines_load(published_tofu_dir):
    data = load_tofu(published_tofu_dir, "forget10")
    assert data.sizes()["qa/forget"] == 20 and data.sizes()["qa/retain"] == 100
    assert data.qa["real_world"][0]["option1"] == "A1"
    files = get_benchmark("tofu").unlearn_files(published_tofu_dir, "forget10")
    assert (files.forget.name, files.retain.name) == ("forget10.json", "retain90.json")
    assert len(read_records(files.forget, ("question", "answer"))) == 20


def test_published_tofu_errors_name_file_line_and_field(published_tofu_dir):
    path = published_tofu_dir / "forget10_perturbed.json"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({k: v for k, v in json.loads(lines[2]).items() if k != "perturbed_answer"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnmemError, match=r"forget10_perturbed\.json:3: field 'perturbed_answer': missing"):
        load_tofu(published_tofu_dir, "forget10")
    with pytest.raises(UnmemError, match=r"forget20\{\.jsonl,\.json,\.parquet\}: file not found"):
        get_benchmark("tofu").unlearn_files(published_tofu_dir, "forget20")


def test_muse_unlearns_knowmem_qa(muse_dir):
    files = get_benchmark("muse").unlearn_files(muse_dir, "forget")
    assert files.forget.as_posix().endswith("knowmem/forget_qa.json") and files.note


def test_plain_files_layout(tmp_path):
    root = tmp_path / "mine"
    _write_jsonl(root / "forget.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(4)])
    _write_jsonl(root / "holdout.jsonl", [{"question": f"h{i}?", "answer": f"b{i}"} for i in range(5)])
    data = load_benchmark("files", root)
    assert data.benchmark == "files" and data.qa["retain"] == [] and data.membership_kind() == "qa"
    assert supports(data, "tofu") and supports(data, "mia")
    assert supports(data, "muse")  # PrivLeak on forget vs holdout QA
    assert not data.has_truth_ratio("forget")  # plain QA: probability and ROUGE, no truth ratio
    assert any("retain" in note for note in data.notes)
    files = get_benchmark("files").unlearn_files(root, "forget")
    assert files.forget.name == "forget.jsonl" and files.retain is None
    _write_jsonl(root / "forget.jsonl", [{"question": "q?", "answer": 3}])
    with pytest.raises(UnmemError, match=r"forget\.jsonl:1: field 'answer': expected"):
        load_benchmark("files", root)


def test_content_hash_does_not_depend_on_where_files_live(tmp_path):
    """A data file and a built-in file hash the same wherever the data and unmem are installed."""
    for folder in ("a", "z", "b"):
        (tmp_path / folder).mkdir()
    for folder in ("a", "z"):
        (tmp_path / folder / "forget.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "b" / "nlu_items.jsonl").write_text('{"question": "q", "choices": ["x"], "answer": 0}\n')
    builtin = tmp_path / "b" / "nlu_items.jsonl"
    before = EvalData("files", tmp_path / "a", "forget", files=[tmp_path / "a" / "forget.jsonl", builtin])
    after = EvalData("files", tmp_path / "z", "forget", files=[tmp_path / "z" / "forget.jsonl", builtin])
    assert before.content_hash() == after.content_hash() and before.fingerprint() == after.fingerprint()
