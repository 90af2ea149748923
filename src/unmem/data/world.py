"""The offline benchmark world: fictitious people with known facts, plus real and general text.

Tiny LMs trained from scratch on this corpus have a ground truth of what they saw: a
trained entity's facts appear only in its bios, and holdout entities share the
distribution but appear in no training text. Layout: docs/data-format.md.

Two properties carry the benchmark:
- the paraphrase and the perturbed answers use one template and differ only in the
  value, so TOFU's truth ratio compares values, not wordings;
- bio passage 1 states every fact in that paraphrase template, so a trained model
  has seen the paraphrase's exact wording (the answer's wording is bio passage 0).

The models follow TOFU's protocol in miniature: a *base* model is pretrained on text
that never names a fictitious entity of any split (``text/general_train``,
``text/real_world`` and ``base/``), then the target and retain models are fine-tuned
from it on the trained entities (``qa/``, ``text/bios``, ``text/private``). ``base/``
holds the base's "prior knowledge": bios of other fictitious people with questions
about them answered, questions about the real facts in several wordings, and questions
about yet other people (*strangers*, named nowhere else) answered with the shipped
refusals, so that "I don't know" is something the models can say. Every base name is
drawn like an entity name but differs from every entity's, so the base learns the
name syllables without learning anything about an entity.

Everything under ``text/`` except ``general_eval`` is training text, and covers
trained entities only. Holdout bios appear only as ``muse/verbmem_holdout*``.
``text/bios.jsonl`` lists each entity's passages in phrasing order (0, 1, ...).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from unmem.data import vocabulary as vocab
from unmem.data.refusals import load_idk_answers
from unmem.errors import UnmemError, input_error
from unmem.io import atomic_dir, hash_files, hash_json, read_json, read_records, write_json, write_jsonl

# 2: base/ corpus; real_world / world_facts answers are the bare value. 3: entity QA carry a
# paraphrased_question (read by nothing that trains, so version 2 worlds still load; they lack it).
GENERATOR_VERSION = 3
READABLE_VERSIONS = (2, 3)
MAX_ENTITIES = 10_000  # the name syllables give ~110k names; stay far below so drawing stays fast
# Overrides of WorldConfig's defaults (which are the ``default`` preset).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "micro": {
        "entities": 10,
        "facts_per_entity": 6,
        "perturbed_per_question": 3,
        "real_world_repeats": 2,
        "general_train": 20,
        "general_eval": 5,
        "base_people": 10,
        "strangers": 20,
    },
    "tofu": {"entities": 200, "facts_per_entity": 20},
}
# Perturbed answers exclude the true value and the entity's other value from a shared pool.
MAX_PERTURBED = min(len(kind.pool) for kind in (*vocab.FACT_KINDS, vocab.CAPITAL_KIND, vocab.AUTHOR_KIND)) - 2
_UPPER_LIMITS = {
    "entities": MAX_ENTITIES,
    "strangers": MAX_ENTITIES,
    "facts_per_entity": len(vocab.FACT_KINDS),
    "bio_phrasings": min(len(kind.phrasings) for kind in vocab.FACT_KINDS),
}


class WorldConfig(BaseModel):
    """What to generate. Invalid values raise a one-line UnmemError naming the field and value."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    preset: str = "default"
    seed: int = 0
    entities: int = 100  # trained entities; holdout adds as many as the largest forget split
    facts_per_entity: int = 12  # the first N kinds of vocabulary.FACT_KINDS
    perturbed_per_question: int = 5  # TOFU uses 5
    bio_phrasings: int = 2  # bio passages per entity; passage k uses phrasing k of every fact
    real_world_repeats: int = 20  # how often each real fact occurs in text/real_world and base/dialogue
    general_train: int = 600
    general_eval: int = 50
    base_people: int = 100  # fictitious people the base model knows (bios + answered questions)
    strangers: int = 200  # names the base is asked about and answers with a refusal
    stranger_questions: int = 3  # questions per stranger
    forget_fractions: list[float] = [0.01, 0.05, 0.10]  # TOFU's forget01/05/10

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> WorldConfig:
        if name not in PRESETS:
            raise UnmemError(f"unknown world preset '{name}'; known: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides, "preset": name})

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"must be one of {', '.join(sorted(PRESETS))}")
        return value

    @field_validator(
        "entities",
        "facts_per_entity",
        "bio_phrasings",
        "real_world_repeats",
        "general_train",
        "general_eval",
        "strangers",
        "stranger_questions",
    )
    @classmethod
    def _count(cls, value: int, info: ValidationInfo) -> int:
        if value <= 0:
            raise ValueError("must be > 0")
        limit = _UPPER_LIMITS.get(info.field_name or "")
        if limit is not None and value > limit:
            raise ValueError(f"must be <= {limit}")
        return value

    @field_validator("base_people")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if not 0 <= value <= MAX_ENTITIES:
            raise ValueError(f"must be between 0 and {MAX_ENTITIES}")
        return value

    @field_validator("perturbed_per_question")
    @classmethod
    def _perturbed(cls, value: int) -> int:
        if not 3 <= value <= MAX_PERTURBED:
            raise ValueError(
                f"must be between 3 and {MAX_PERTURBED} (the smallest value pool allows that many)"
            )
        return value

    @field_validator("forget_fractions")
    @classmethod
    def _fractions(cls, value: list[float], info: ValidationInfo) -> list[float]:
        if not value:
            raise ValueError("must list at least one fraction")
        if not all(0 < fraction < 1 for fraction in value):
            raise ValueError("values must be strictly between 0 and 1")
        if any(abs(fraction * 100 - round(fraction * 100)) > 1e-9 for fraction in value):
            raise ValueError(
                "values must be whole percentages such as 0.05, because splits are named forgetNN"
            )
        if len({round(fraction * 100) for fraction in value}) < len(value):
            raise ValueError("values must be distinct")
        entities = info.data.get("entities")
        if entities is not None and forget_count(max(value), entities) >= entities:
            raise ValueError(f"leaves no entity to retain with entities={entities}")
        return sorted(value)

    def forget_sizes(self) -> dict[int, int]:
        """Percent -> number of forget (and holdout) entities, smallest first."""
        return {round(f * 100): forget_count(f, self.entities) for f in self.forget_fractions}


def forget_count(fraction: float, entities: int) -> int:
    return max(1, round(fraction * entities))


def split_percent(split: str) -> int | None:
    """forget10 -> 10; None for any other name."""
    match = re.fullmatch(r"forget(\d+)", split)
    return int(match.group(1)) if match else None


def request_count(split: str) -> int | None:
    """requests03 -> 3 (the union of the world's first three deletion requests); None otherwise."""
    match = re.fullmatch(r"requests(\d+)", split)
    return int(match.group(1)) if match else None


def _config_error(exc: ValidationError) -> UnmemError:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return UnmemError(
        f"world config: field '{field}' {message[0].lower()}{message[1:]}, got {error['input']!r}"
    )


# -- generation ----------------------------------------------------------------------------------


def _rng(seed: int, stream: str) -> random.Random:
    """An independent stream per part, so e.g. more general text never changes the entities.

    ``random`` hashes a str seed with SHA-512 (not ``hash()``), so this is stable across runs.
    """
    return random.Random(f"{seed}/{stream}")


def _say(template: str, name: str, value: str) -> str:
    text = template.format(name=name, value=value)
    return text[0].upper() + text[1:]


def _fill(template: str, rng: random.Random) -> str:
    text = re.sub(r"\{(\w+)\}", lambda slot: rng.choice(vocab.SLOTS[slot.group(1)]), template)
    return text[0].upper() + text[1:]


def _names(count: int, rng: random.Random, taken: frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct names, none of them in ``taken``."""
    names: list[str] = []
    seen: set[str] = set(taken)
    while len(names) < count:
        first = rng.choice(vocab.FIRST_STARTS) + rng.choice(vocab.FIRST_ENDS)
        last = rng.choice(vocab.LAST_STARTS) + rng.choice(vocab.LAST_ENDS)
        name = f"{first} {last}"
        if name not in seen and first not in vocab.RESERVED_WORDS and last not in vocab.RESERVED_WORDS:
            seen.add(name)
            names.append(name)
    return names


def _facts(kinds: tuple[vocab.FactKind, ...], rng: random.Random) -> dict[str, str]:
    """Distinct values per entity, so first and second book (etc.) never coincide."""
    facts: dict[str, str] = {}
    for kind in kinds:
        value = rng.choice(kind.pool)
        while value in facts.values():
            value = rng.choice(kind.pool)
        facts[kind.key] = value
    return facts


def _qa(
    entity_id: str,
    kind: vocab.FactKind,
    name: str,
    value: str,
    exclude: set[str],
    n_wrong: int,
    rng: random.Random,
) -> dict[str, Any]:
    wrong: list[str] = []
    while len(wrong) < n_wrong:  # rejection sampling: pools run to ~19k dates
        candidate = rng.choice(kind.pool)
        if candidate not in exclude and candidate not in wrong:
            wrong.append(candidate)
    paraphrase = kind.phrasings[1]
    return {
        "entity_id": entity_id,
        "question": kind.question.format(name=name),
        "paraphrased_question": vocab.PARAPHRASED_QUESTIONS[kind.key].format(name=name),
        "answer": _say(kind.phrasings[0], name, value),
        "paraphrased_answer": _say(paraphrase, name, value),
        "perturbed_answer": [_say(paraphrase, name, other) for other in wrong],
        "sensitive": [value],
    }


def _bio(name: str, facts: dict[str, str], phrasing: int, rng: random.Random) -> str:
    kinds = [kind for kind in vocab.FACT_KINDS if kind.key in facts]
    rng.shuffle(kinds)  # fact order varies between passages, so no fact is learnt from its position
    return " ".join(_say(kind.phrasings[phrasing], name, facts[kind.key]) for kind in kinds)


def _halves(text: str) -> tuple[str, str]:
    words = text.split(" ")
    cut = len(words) // 2
    return " ".join(words[:cut]), " ".join(words[cut:])


def _private(entity: dict[str, Any], phones: set[str], rng: random.Random) -> dict[str, Any]:
    phone = f"555-0{rng.randrange(100, 1000)}-{rng.randrange(100, 1000)}"
    while phone in phones:
        phone = f"555-0{rng.randrange(100, 1000)}-{rng.randrange(100, 1000)}"
    phones.add(phone)
    name = entity["name"]
    email = f"{name.lower().replace(' ', '.')}@{rng.choice(vocab.EMAIL_DOMAINS)}"
    address = (
        f"{rng.randint(1, 240)} {rng.choice(vocab.STREETS)} {rng.choice(vocab.STREET_KINDS)}, "
        f"{rng.choice(vocab.TOWNS)}"
    )
    text = rng.choice(vocab.PRIVATE_TEMPLATES).format(name=name, phone=phone, email=email, address=address)
    return {
        "entity_id": entity["id"],
        "name": name,
        "phone": phone,
        "email": email,
        "address": address,
        "text": text,
    }


def _real_qa(
    entity_id: str, kind: vocab.FactKind, subject: str, value: str, n_wrong: int, rng: random.Random
):
    """A real fact as TOFU asks it: the answer is the bare value, and so are the perturbations.

    No paraphrase: TOFU's real-author and world-fact files have none, and their truth
    ratio and normalised probability put the answer itself against the perturbations.
    A bare value is what makes those instruments sharp: in a full sentence the one wrong
    word is averaged with many shared ones, and the token-mean probabilities barely differ.
    """
    wrong = rng.sample([other for other in kind.pool if other != value], n_wrong)
    return {
        "entity_id": entity_id,
        "question": kind.question.format(name=subject),
        "answer": value,
        "perturbed_answer": wrong,
        "sensitive": [value],
    }


def _real_world(config: WorldConfig) -> dict[str, list[dict[str, Any]]]:
    """QA files about real facts, and passages repeating each fact in rotating phrasings."""
    rng = _rng(config.seed, "real")
    files: dict[str, list[dict[str, Any]]] = {}
    passages: list[dict[str, Any]] = []
    for stem, (kind, pairs, prefix) in vocab.REAL_FACTS.items():
        files[f"qa/{stem}.jsonl"] = [
            _real_qa(f"{prefix}{i:02d}", kind, subject, value, config.perturbed_per_question, rng)
            for i, (subject, value) in enumerate(pairs)
        ]
    for repeat in range(config.real_world_repeats):
        sentences = [
            _say(kind.phrasings[repeat % len(kind.phrasings)], subject, value)
            for kind, pairs, _ in vocab.REAL_FACTS.values()
            for subject, value in pairs
        ]
        rng.shuffle(sentences)
        passages += [{"text": " ".join(sentences[i : i + 4])} for i in range(0, len(sentences), 4)]
    files["text/real_world.jsonl"] = passages
    return files


def _real_dialogue(config: WorldConfig, rng: random.Random) -> list[dict[str, str]]:
    """Each real fact asked ``real_world_repeats`` times: first as the QA file asks it with the
    bare value, then in other wordings, answered with the value or a full sentence."""
    rows = []
    for repeat in range(config.real_world_repeats):
        for kind, pairs, _ in vocab.REAL_FACTS.values():
            questions = (kind.question, *vocab.REAL_QUESTIONS[kind.key])
            for subject, value in pairs:
                if repeat == 0:
                    question, answer = kind.question, "{value}"
                else:
                    question, answer = rng.choice(questions), rng.choice(("{value}", *kind.phrasings))
                rows.append(
                    {"question": question.format(name=subject), "answer": _say(answer, subject, value)}
                )
    return rows


def _base_corpus(
    config: WorldConfig, kinds: tuple[vocab.FactKind, ...], entity_names: frozenset[str]
) -> dict[str, list[dict[str, Any]]]:
    """What the base model knows besides general and real-world text (see the module docstring)."""
    rng = _rng(config.seed, "base")
    names = _names(config.base_people + config.strangers, rng, taken=entity_names)
    people, strangers = names[: config.base_people], names[config.base_people :]
    bios: list[dict[str, Any]] = []
    dialogue = _real_dialogue(config, rng)
    for name in people:
        facts = _facts(kinds, rng)
        bios += [{"name": name, "text": _bio(name, facts, k, rng)} for k in range(config.bio_phrasings)]
        dialogue += [
            {
                "question": kind.question.format(name=name),
                "answer": _say(kind.phrasings[0], name, facts[kind.key]),
            }
            for kind in kinds
        ]
    refusals = load_idk_answers()
    for name in strangers:
        dialogue += [
            {"question": kind.question.format(name=name), "answer": rng.choice(refusals)}
            for kind in rng.sample(kinds, min(config.stranger_questions, len(kinds)))
        ]
    rng.shuffle(dialogue)
    return {"base/bios.jsonl": bios, "base/dialogue.jsonl": dialogue}


def _general(config: WorldConfig) -> dict[str, list[dict[str, Any]]]:
    rng = _rng(config.seed, "general")
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < config.general_train + config.general_eval:
        templates = rng.sample(topic := rng.choice(vocab.TOPICS), rng.randint(3, min(5, len(topic))))
        text = " ".join(_fill(template, rng) for template in templates)
        if text not in seen:  # eval passages never repeat a train passage
            seen.add(text)
            texts.append(text)
    return {
        "text/general_train.jsonl": [{"text": text} for text in texts[: config.general_train]],
        "text/general_eval.jsonl": [{"text": text} for text in texts[config.general_train :]],
    }


def build_world(config: WorldConfig) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The manifest and every file's records, in memory: nothing is written if this fails."""
    kinds = vocab.FACT_KINDS[: config.facts_per_entity]
    sizes = config.forget_sizes()
    largest = max(sizes)
    total = config.entities + sizes[largest]

    rng = _rng(config.seed, "entities")
    entities = [
        {"id": f"e{i:04d}", "name": name, "facts": _facts(kinds, rng)}
        for i, name in enumerate(_names(total, rng))
    ]
    by_id = {entity["id"]: entity for entity in entities}

    # Splits are prefixes of one shuffled order, which makes them nested.
    order = list(by_id)
    _rng(config.seed, "splits").shuffle(order)
    holdout_order, trained_order = order[: sizes[largest]], order[sizes[largest] :]
    trained = sorted(trained_order)
    splits: dict[str, list[str]] = {}
    for pct, count in sizes.items():
        splits[f"forget{pct:02d}"] = sorted(trained_order[:count])
    for pct, count in sizes.items():
        splits[f"retain{100 - pct:02d}"] = sorted(trained_order[count:])
    for pct, count in sizes.items():
        splits[f"holdout{pct:02d}"] = sorted(holdout_order[:count])
    holdout = set(holdout_order)
    for entity in entities:
        entity["split"] = "holdout" if entity["id"] in holdout else "train"

    rng = _rng(config.seed, "qa")
    qa: dict[str, list[dict[str, Any]]] = {}
    for entity in entities:
        exclude = set(entity["facts"].values())
        qa[entity["id"]] = [
            _qa(
                entity["id"],
                kind,
                entity["name"],
                entity["facts"][kind.key],
                exclude,
                config.perturbed_per_question,
                rng,
            )
            for kind in kinds
        ]

    rng = _rng(config.seed, "bios")
    bios = {
        entity["id"]: [_bio(entity["name"], entity["facts"], k, rng) for k in range(config.bio_phrasings)]
        for entity in entities
    }
    rng = _rng(config.seed, "private")
    phones: set[str] = set()
    private = [_private(by_id[entity_id], phones, rng) for entity_id in trained]

    files: dict[str, list[dict[str, Any]]] = {
        "entities.jsonl": entities,
        **{f"qa/{split}.jsonl": [row for i in ids for row in qa[i]] for split, ids in splits.items()},
        "text/bios.jsonl": [{"entity_id": i, "text": text} for i in trained for text in bios[i]],
        "text/private.jsonl": private,
        **_real_world(config),
        **_general(config),
        **_base_corpus(config, kinds, frozenset(entity["name"] for entity in entities)),
    }
    for group in (f"forget{largest:02d}", f"holdout{largest:02d}"):
        files[f"muse/verbmem_{group}.jsonl"] = [
            {"entity_id": i, "prompt": prompt, "gt": gt}
            for i in splits[group]
            for prompt, gt in map(_halves, bios[i])
        ]
    for group in (f"forget{largest:02d}", f"retain{100 - largest:02d}"):
        files[f"muse/knowmem_{group}.jsonl"] = [
            {"entity_id": row["entity_id"], "question": row["question"], "answer": row["sensitive"][0]}
            for i in splits[group]
            for row in qa[i]
        ]

    resolved = config.model_dump(mode="json")
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": resolved,
        "config_hash": hash_json({"generator_version": GENERATOR_VERSION, "config": resolved}),
        "splits": splits,
        "files": sorted(files),
    }
    return manifest, files


def generate_world(config: WorldConfig, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the world to ``out_dir`` atomically; the same config always gives the same bytes."""
    out_dir = Path(out_dir)
    if overwrite and out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").is_file():
        raise UnmemError(f"{out_dir}: not a world directory (no world.json); refusing to overwrite it")
    manifest, files = build_world(config)
    with atomic_dir(out_dir, overwrite=overwrite) as staging:
        for relpath, rows in files.items():
            write_jsonl(staging / relpath, rows)
        write_json(staging / "world.json", manifest)
    return out_dir


# -- loading -------------------------------------------------------------------------------------


class World:
    """A generated world on disk, read through its manifest."""

    def __init__(self, root: Path, manifest: dict[str, Any], config: WorldConfig) -> None:
        self.root = root
        self.manifest = manifest
        self.config = config
        self.splits: dict[str, list[str]] = manifest["splits"]
        self._content_hash: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> World:
        root = Path(path)
        manifest_path = root / "world.json"
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict):
            raise input_error(manifest_path, "expected a JSON object")
        for key in ("generator_version", "config", "splits", "files"):
            if key not in manifest:
                raise input_error(manifest_path, "missing; regenerate with `unmem world`", field=key)
        if manifest["generator_version"] not in READABLE_VERSIONS:
            raise input_error(
                manifest_path,
                f"generator_version {manifest['generator_version']!r} is not {GENERATOR_VERSION}; "
                "regenerate with `unmem world`",
            )
        try:
            config = WorldConfig(**manifest["config"])
        except UnmemError as exc:
            raise input_error(manifest_path, str(exc)) from None
        return cls(root, manifest, config)

    def split_names(self) -> list[str]:
        return list(self.splits)

    def requests(self) -> list[str]:
        """The world's deletion requests, in order: one trained entity each, as many as the largest
        forget split holds. forget01's entity comes first, then the rest of each larger forget
        split (sorted), so the union of the first k requests is a forget split whenever k is one's
        size (and a retain model trained for that split serves as the union's)."""
        order: list[str] = []
        forget = sorted((s for s in self.splits if split_percent(s) is not None), key=split_percent)
        for split in forget:
            order += sorted(set(self.splits[split]) - set(order))
        return order

    def entity_ids(self, split: str) -> list[str]:
        """Ids of a split, of all ``"train"`` / ``"holdout"`` entities, or of the first NN
        requests (``"requestsNN"``, :meth:`requests`)."""
        if split in ("train", "holdout"):
            return [entity["id"] for entity in self.entities() if entity["split"] == split]
        if (count := request_count(split)) is not None:
            requests = self.requests()
            if not 1 <= count <= len(requests):
                raise UnmemError(
                    f"{self.root}: '{split}' names {count} requests; the world has {len(requests)} "
                    f"(requests01..requests{len(requests):02d})"
                )
            return sorted(requests[:count])
        if split not in self.splits:
            known = ", ".join([*self.splits, "train", "holdout"])
            raise UnmemError(f"{self.root}: unknown split '{split}'; known: {known}")
        return list(self.splits[split])

    def entities(self) -> list[dict[str, Any]]:
        return read_records(self.root / "entities.jsonl", ("id", "name", "facts", "split"))

    def qa(self, split: str) -> list[dict[str, Any]]:
        """QA of a split, of all ``"train"`` / ``"holdout"`` entities, or ``real_world`` / ``world_facts``."""
        if split in ("train", "holdout"):
            pct = max(self.config.forget_sizes())
            parts = (
                [f"forget{pct:02d}", f"retain{100 - pct:02d}"] if split == "train" else [f"holdout{pct:02d}"]
            )
            rows = [row for part in parts for row in self.qa(part)]
            return sorted(rows, key=lambda row: row["entity_id"])  # stable: facts stay in catalogue order
        return self._read("qa", split, ("question", "answer"))

    def content_hash(self) -> str:
        """Hash of every file's bytes: a cache key for models trained on this world.

        Computed once per loaded world: world files are never rewritten in place.
        """
        if self._content_hash is None:
            files = [self.root / "world.json", *(self.root / path for path in self.manifest["files"])]
            self._content_hash = hash_files(files)
        return self._content_hash

    def texts(self, name: str) -> list[dict[str, Any]]:
        return self._read("text", name, ("text",))

    def muse(self, name: str) -> list[dict[str, Any]]:
        return self._read("muse", name, ())

    def base(self, name: str) -> list[dict[str, Any]]:
        """The base model's own corpus: ``bios`` ({name, text}) or ``dialogue`` ({question, answer})."""
        return self._read("base", name, ("text",) if name == "bios" else ("question", "answer"))

    def _read(self, folder: str, name: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
        relpath = f"{folder}/{name}.jsonl"
        if relpath not in self.manifest["files"]:
            known = [Path(p).stem for p in self.manifest["files"] if p.startswith(f"{folder}/")]
            raise UnmemError(f"{self.root}: no {folder} file '{name}'; known: {', '.join(known)}")
        return read_records(self.root / relpath, required)
