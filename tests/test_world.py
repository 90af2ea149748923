"""The generated world: layout, QA schema, nested splits, determinism, config errors, bio phrasings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unmem.cli import app
from unmem.data import vocabulary as vocab
from unmem.data.refusals import load_idk_answers
from unmem.data.world import World, WorldConfig, generate_world
from unmem.errors import UnmemError

LAYOUT = [
    ".unmem-output",  # the marker that lets `--overwrite` replace a directory unmem wrote
    "world.json",
    "entities.jsonl",
    *(
        f"qa/{split}.jsonl"
        for split in ("forget01", "forget05", "forget10", "retain99", "retain95", "retain90")
    ),
    *(f"qa/holdout{pct}.jsonl" for pct in ("01", "05", "10")),
    "qa/real_world.jsonl",
    "qa/world_facts.jsonl",
    *(f"text/{name}.jsonl" for name in ("bios", "private", "real_world", "general_train", "general_eval")),
    "muse/verbmem_forget10.jsonl",
    "muse/verbmem_holdout10.jsonl",
    "muse/knowmem_forget10.jsonl",
    "muse/knowmem_retain90.jsonl",
    "base/bios.jsonl",
    "base/dialogue.jsonl",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World.load(
        generate_world(WorldConfig.from_preset("micro"), tmp_path_factory.mktemp("w") / "world")
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_data_format(world: World) -> None:
    assert sorted(_files(world.root)) == sorted(LAYOUT)
    assert sorted(world.manifest["files"]) == sorted(set(LAYOUT) - {"world.json", ".unmem-output"})


def test_qa_schema(world: World) -> None:
    for name in world.split_names():
        for row in world.qa(name):
            assert set(row) == {
                "entity_id",
                "question",
                "paraphrased_question",
                "answer",
                "paraphrased_answer",
                "perturbed_answer",
                "sensitive",
            }
            assert row["paraphrased_question"] != row["question"]
            wrong = row["perturbed_answer"]
            assert len(wrong) >= 3 and len(set(wrong)) == len(wrong)
            assert row["paraphrased_answer"] not in wrong
            assert row["paraphrased_answer"] != row["answer"]
            assert all(
                value in row["answer"] and value in row["paraphrased_answer"] for value in row["sensitive"]
            )


def test_real_facts_are_asked_like_tofu(world: World) -> None:
    # TOFU's real-author / world-fact files: a bare answer, bare perturbations, no paraphrase.
    for name in ("real_world", "world_facts"):
        for row in world.qa(name):
            assert set(row) == {"entity_id", "question", "answer", "perturbed_answer", "sensitive"}
            assert row["sensitive"] == [row["answer"]]
            wrong = row["perturbed_answer"]
            assert len(wrong) == world.config.perturbed_per_question == len(set(wrong))
            assert row["answer"] not in wrong
            kind = vocab.CAPITAL_KIND if name == "world_facts" else vocab.AUTHOR_KIND
            assert set(wrong) <= set(kind.pool)


def test_splits_nested_and_disjoint(world: World) -> None:
    ids = {name: set(world.entity_ids(name)) for name in world.split_names()}
    trained, holdout = set(world.entity_ids("train")), set(world.entity_ids("holdout"))
    assert ids["forget01"] <= ids["forget05"] <= ids["forget10"]
    assert ids["holdout01"] <= ids["holdout05"] <= ids["holdout10"] == holdout
    for pct in ("01", "05", "10"):
        forget, retain = ids[f"forget{pct}"], ids[f"retain{100 - int(pct):02d}"]
        assert not forget & retain
        assert forget | retain == trained
        assert len(ids[f"holdout{pct}"]) == len(forget)
        assert {row["entity_id"] for row in world.qa(f"forget{pct}")} == forget
    assert not holdout & trained
    assert len(trained) == world.config.entities
    assert {row["entity_id"] for row in world.qa("train")} == trained
    assert {row["entity_id"] for row in world.qa("holdout")} == holdout


def test_names_unique_and_fictitious(world: World) -> None:
    names = [entity["name"] for entity in world.entities()]
    assert len(set(names)) == len(names)
    assert not {word for name in names for word in name.split()} & vocab.RESERVED_WORDS


def test_training_text_covers_trained_entities_only(world: World) -> None:
    trained = set(world.entity_ids("train"))
    assert {row["entity_id"] for row in world.texts("bios")} == trained
    assert {row["entity_id"] for row in world.texts("private")} == trained
    train = {row["text"] for row in world.texts("general_train")}
    assert not train & {row["text"] for row in world.texts("general_eval")}


def test_base_corpus_names_no_entity(world: World) -> None:
    # The base model must know nothing about any split: no entity's name appears in its corpus.
    names = {entity["name"] for entity in world.entities()}
    bios, dialogue = world.base("bios"), world.base("dialogue")
    base_text = " ".join(
        [r["text"] for r in bios]
        + [f"{r['question']} {r['answer']}" for r in dialogue]
        + [r["text"] for name in ("general_train", "real_world") for r in world.texts(name)]
    )
    assert not any(name in base_text for name in names)
    people = {r["name"] for r in bios}
    assert len(people) == world.config.base_people and not people & names


def test_base_dialogue_refuses_strangers_and_answers_the_rest(world: World) -> None:
    refusals = set(load_idk_answers())
    people = {r["name"] for r in world.base("bios")}
    dialogue = world.base("dialogue")
    refused = [r for r in dialogue if r["answer"] in refusals]
    assert len(refused) == world.config.strangers * world.config.stranger_questions
    assert not any(name in r["question"] for r in refused for name in people)
    # Every real fact is asked at least once exactly as the QA file asks it, answered with the bare value.
    real = {(r["question"], r["answer"]) for name in ("real_world", "world_facts") for r in world.qa(name)}
    assert real <= {(r["question"], r["answer"]) for r in dialogue}


def test_bio_phrasing_1_states_every_paraphrase(world: World) -> None:
    # The truth ratio's denominator must be the wording the model was trained on.
    bios: dict[str, list[str]] = {}
    for row in world.texts("bios"):
        bios.setdefault(row["entity_id"], []).append(row["text"])
    for split in ("forget10", "retain90"):
        for row in world.qa(split):
            passages = bios[row["entity_id"]]
            assert len(passages) == world.config.bio_phrasings
            assert row["paraphrased_answer"] in passages[1]
            assert row["answer"] in passages[0]


def test_muse_files(world: World) -> None:
    bios = {row["text"] for row in world.texts("bios")}
    for row in world.muse("verbmem_forget10"):
        assert f"{row['prompt']} {row['gt']}" in bios
    for row in world.muse("knowmem_forget10"):
        assert row["entity_id"] in world.splits["forget10"]
        assert row["answer"] in {value for e in world.entities() for value in e["facts"].values()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _files(generate_world(WorldConfig.from_preset("micro"), tmp_path / "a"))
    assert first == _files(generate_world(WorldConfig.from_preset("micro"), tmp_path / "b"))
    assert World.load(tmp_path / "a").content_hash() == World.load(tmp_path / "b").content_hash()
    other = _files(generate_world(WorldConfig.from_preset("micro", seed=1), tmp_path / "c"))
    assert other["entities.jsonl"] != first["entities.jsonl"]


def test_existing_dir_needs_overwrite(tmp_path: Path) -> None:
    config = WorldConfig.from_preset("micro")
    generate_world(config, tmp_path / "w")
    with pytest.raises(UnmemError, match="already exists"):
        generate_world(config, tmp_path / "w")
    generate_world(config, tmp_path / "w", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(UnmemError, match="not a world directory"):
        generate_world(config, tmp_path / "other", overwrite=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "micro", "--entities", "-3"], "field 'entities' must be > 0, got -3"),
        (["--preset", "nope"], "unknown world preset 'nope'; known: default, micro, tofu"),
    ],
)
def test_cli_bad_config_writes_nothing(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(app, ["world", "--out", str(out), *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_generates(tmp_path: Path) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(app, ["world", "--out", str(out), "--preset", "micro", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    assert World.load(out).config.seed == 3


@pytest.mark.parametrize(
    "overrides",
    [{"forget_fractions": [0.05, 1.5]}, {"forget_fractions": [0.0]}, {"forget_fractions": [0.015]}],
)
def test_bad_fractions_name_the_field(overrides: dict[str, list[float]]) -> None:
    with pytest.raises(UnmemError, match="field 'forget_fractions'"):
        WorldConfig.from_preset("micro", **overrides)


def test_load_errors_name_the_file(tmp_path: Path, world: World) -> None:
    with pytest.raises(UnmemError, match=r"world\.json: file not found"):
        World.load(tmp_path)
    with pytest.raises(UnmemError, match="unknown split 'forget50'"):
        world.entity_ids("forget50")
    with pytest.raises(UnmemError, match="no qa file 'forget50'"):
        world.qa("forget50")


def test_the_world_names_its_deletion_requests(tmp_path):
    """Issue 18: one person per request, nested like the forget splits; requestsNN is their union."""
    from unmem.data.benchmarks import load_world

    root = generate_world(WorldConfig.from_preset("micro", entities=40), tmp_path / "w")
    world = World.load(root)
    requests = world.requests()
    assert len(requests) == 4 and len(set(requests)) == 4  # forget10 of 40 people
    assert requests[:1] == world.splits["forget01"] and sorted(requests[:2]) == world.splits["forget05"]
    assert sorted(requests) == world.splits["forget10"] == world.entity_ids("requests04")
    assert world.entity_ids("requests03") == sorted(requests[:3])
    data = load_world(root, "requests03")
    assert {r["entity_id"] for r in data.qa["forget"]} == set(requests[:3])
    assert data.qa["holdout"] == load_world(root, "forget10").qa["holdout"]  # every request's holdout
    assert len(data.qa["retain"]) == len(load_world(root, "forget10").qa["retain"])  # the same at every step
    with pytest.raises(UnmemError, match="names 5 requests; the world has 4"):
        world.entity_ids("requests05")


def test_a_version_2_world_still_loads_without_paraphrased_questions(tmp_path):
    """Generator 3 only added `paraphrased_question`, which nothing trains on: older worlds load."""
    import json

    from unmem.data.benchmarks import load_world

    root = generate_world(WorldConfig.from_preset("micro"), tmp_path / "world")
    manifest = json.loads((root / "world.json").read_text())
    (root / "world.json").write_text(json.dumps(manifest | {"generator_version": 2}))
    for path in (root / "qa").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text(
            "".join(
                json.dumps({k: v for k, v in r.items() if k != "paraphrased_question"}) + "\n" for r in rows
            )
        )
    assert "paraphrased_question" not in load_world(root, "forget10").qa["forget"][0]
    manifest["generator_version"] = 1
    (root / "world.json").write_text(json.dumps(manifest))
    with pytest.raises(UnmemError, match="generator_version 1"):
        World.load(root)
