"""Projects: a set of pairs to compare, how many annotators see each (overlap), gold items and guidelines.

A pairwise project is made from any preference file `directalign train` reads (`load_records`): every pair of
every record becomes an item whose `response_0` is the file's chosen response and `response_1` its rejected one.
Annotators never learn which is which: each assignment draws the side at random. Gold (known-answer) items come
from a second preference file (`gold_file`, its chosen response is the answer) or from `gold_count` pairs taken
out of the data itself; they are mixed in at `gold_rate` and make up the qualification round.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from directalign.annotate.db import Database, audit
from directalign.annotate.models import KINDS, Item, Project
from directalign.data.formats import load_records
from directalign.data.types import Message
from directalign.errors import ConfigError, DataError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

PAIRWISE_GUIDELINES = """\
# How to compare two responses

You see a conversation and two responses to its last message, **A** and **B**. Decide which response is better.

- **A** or **B**: the better response is more helpful, correct, honest and harmless, and follows the user's
  instructions (including format and length).
- **Tie**: both are good and neither is clearly better.
- **Both bad**: neither response is acceptable (wrong, harmful, or does not answer).

Judge the content, not the length or the position: the sides are drawn at random for every item.
Write a short rationale when the choice is hard. Some items have a known answer and check the labelling.

Keys: `1` A, `2` B, `3` tie, `4` both bad, `s` skip, `u` undo the last vote, `g` these guidelines.
"""

HUMANEVAL_GUIDELINES = PAIRWISE_GUIDELINES.replace(
    "Judge the content", "The two responses come from two models; which model wrote which is hidden. Judge the content"
)


@dataclass
class Pair:
    """One comparison to be: a prompt and two responses (message lists); gold_answer 0 or 1 for a gold item."""

    prompt: list[Message]
    response_0: list[Message]
    response_1: list[Message]
    source: str
    gold_answer: int | None = None


@dataclass
class ProjectOptions:
    overlap: int = 3
    lease_seconds: float = 600.0
    guidelines: str = PAIRWISE_GUIDELINES
    gold_rate: float = 0.0
    gold_feedback: bool = False
    qualification_size: int = 0
    qualification_pass: float = 0.8
    settings: dict = field(default_factory=dict)

    def check(self, n_gold: int) -> None:
        problems = []
        if self.overlap < 1:
            problems.append(f"--overlap must be >= 1, got {self.overlap}")
        if self.lease_seconds <= 0:
            problems.append(f"--lease-seconds must be > 0, got {self.lease_seconds}")
        if not 0 <= self.gold_rate < 1:
            problems.append(f"--gold-rate must be in [0, 1), got {self.gold_rate}")
        if self.gold_rate > 0 and n_gold == 0:
            problems.append("--gold-rate needs gold items (--gold FILE or --gold-count N)")
        if not 0 <= self.qualification_size <= n_gold:
            problems.append(f"--qualification {self.qualification_size}: must be in [0, {n_gold}] (the gold items)")
        if not 0 <= self.qualification_pass <= 1:
            problems.append(f"--qualification-pass must be in [0, 1], got {self.qualification_pass}")
        if problems:
            raise ConfigError("; ".join(problems))


def pairs_from_file(path: str | Path, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> list[Pair]:
    """Every (chosen, rejected) pair of a preference file, in file order (or shuffled), the first `limit`."""
    loaded = load_records(path)
    pairs = [
        Pair(record.prompt, record.responses[i], record.responses[j], record.source)
        for record in loaded.records
        for i, j in record.pairs
    ]
    if not pairs:
        raise DataError(f"{path}: no pairs to compare (schema {loaded.schema}; an unpaired KTO file has none)")
    if shuffle:
        random.Random(seed).shuffle(pairs)
    return pairs[:limit] if limit else pairs


def split_gold(pairs: list[Pair], gold_count: int, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(regular, gold): `gold_count` pairs drawn at random become gold items, their chosen response the answer."""
    if not 0 <= gold_count < len(pairs):
        raise ConfigError(f"--gold-count {gold_count}: must be in [0, {len(pairs) - 1}] for {len(pairs)} pairs")
    picked = set(random.Random(seed).sample(range(len(pairs)), gold_count))
    gold = [Pair(p.prompt, p.response_0, p.response_1, p.source, gold_answer=0) for i, p in enumerate(pairs)
            if i in picked]
    return [p for i, p in enumerate(pairs) if i not in picked], gold


def as_gold(pairs: list[Pair]) -> list[Pair]:
    return [Pair(p.prompt, p.response_0, p.response_1, p.source, gold_answer=0) for p in pairs]


def create_project(
    db: Database, name: str, kind: str, pairs: list[Pair], options: ProjectOptions, source: str
) -> int:
    """Write the project and its items in one transaction; returns the project id."""
    if not NAME.match(name):
        raise ConfigError(f"--name {name!r}: use up to 128 letters, digits and . _ - (it appears in URLs)")
    if kind not in KINDS:
        raise ConfigError(f"project kind {kind!r}: choose one of {', '.join(KINDS)}")
    n_gold = sum(p.gold_answer is not None for p in pairs)
    options.check(n_gold)
    if n_gold == len(pairs):
        raise ConfigError("a project needs at least one item that is not gold")
    settings = asdict(options)
    try:
        with db.write() as session:
            now = db.clock()
            project = Project(name=name, kind=kind, overlap=options.overlap, lease_seconds=options.lease_seconds,
                              guidelines=options.guidelines, gold_rate=options.gold_rate,
                              gold_feedback=options.gold_feedback, qualification_size=options.qualification_size,
                              qualification_pass=options.qualification_pass, source=source,
                              settings=json.dumps(settings.pop("settings")), created_at=now)
            session.add(project)
            session.flush()
            session.add_all(
                Item(project_id=project.id, position=position, prompt=_json(p.prompt), response_0=_json(p.response_0),
                     response_1=_json(p.response_1), source=p.source, gold_answer=p.gold_answer)
                for position, p in enumerate(pairs)
            )
            audit(session, now, "create_project", project_id=project.id, name=name, kind=kind, source=source,
                  items=len(pairs) - n_gold, gold=n_gold, **{k: v for k, v in settings.items() if k != "guidelines"})
    except IntegrityError as err:
        raise ConfigError(f"project {name!r} already exists in {db.shown}") from err
    return project.id


def get_project(db: Database, name: str) -> Project:
    with db.read() as session:
        project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise ConfigError(f"no project {name!r} in {db.shown} (see `directalign annotate status`)")
    return project


def list_projects(db: Database) -> list[tuple[Project, int, int]]:
    """(project, regular items, gold items) for every project, oldest first."""
    with db.read() as session:
        projects = session.scalars(select(Project).order_by(Project.id)).all()
        counts = dict(session.execute(
            select(Item.project_id, func.count()).where(Item.gold_answer.is_(None)).group_by(Item.project_id)).all())
        gold = dict(session.execute(
            select(Item.project_id, func.count()).where(Item.gold_answer.is_not(None)).group_by(Item.project_id)).all())
    return [(p, counts.get(p.id, 0), gold.get(p.id, 0)) for p in projects]


def set_guidelines(db: Database, name: str, markdown: str) -> None:
    project = get_project(db, name)
    with db.write() as session:
        session.get(Project, project.id).guidelines = markdown
        audit(session, db.clock(), "set_guidelines", project_id=project.id, length=len(markdown))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
