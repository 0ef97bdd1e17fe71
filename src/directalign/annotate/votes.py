"""A project's votes read out of the database, in the shapes the statistics, plots and exports use."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from directalign.annotate.db import Database
from directalign.annotate.models import DONE, LEASED, Assignment, Item, Project, User
from directalign.quality.table import RatingTable, rating_table

OUTCOMES = ("0", "1", "tie", "both_bad")


@dataclass
class Vote:
    assignment_id: int
    item_id: int
    annotator: str
    left: int
    verdict: str
    preferred: str
    rationale: str | None
    submitted_at: float
    seconds: float
    is_gold: bool
    gold_correct: bool | None


@dataclass
class ItemRow:
    id: int
    position: int
    source: str
    prompt: list
    response_0: list
    response_1: list
    gold_answer: int | None
    judge_name: str | None
    judge_winner: str | None
    judge_prob: float | None
    judge_flip: bool | None


@dataclass
class ProjectVotes:
    project: Project
    items: list[ItemRow]
    votes: list[Vote]  # oldest first
    live_leases: int

    @property
    def regular(self) -> list[Vote]:
        return [v for v in self.votes if not v.is_gold]

    @property
    def gold(self) -> list[Vote]:
        return [v for v in self.votes if v.is_gold]

    def counts(self) -> dict[int, Counter]:
        """{item_id: Counter of preferred outcomes} over the regular votes."""
        result: dict[int, Counter] = {}
        for vote in self.regular:
            result.setdefault(vote.item_id, Counter())[vote.preferred] += 1
        return result

    def rating_table(self) -> RatingTable | None:
        """Regular votes as a RatingTable labelled in response terms (never by side); None without votes."""
        rows = [{"item_id": v.item_id, "annotator_id": v.annotator, "label": v.preferred} for v in self.regular]
        return rating_table(rows, source=f"project {self.project.name}") if rows else None


def load_votes(db: Database, project: Project, with_text: bool = False) -> ProjectVotes:
    """Every vote (status done) of the project and its items; with_text also decodes prompts and responses."""
    now = db.clock()
    with db.read() as session:
        items = session.execute(select(Item).where(Item.project_id == project.id).order_by(Item.position)).scalars()
        item_rows = [_item_row(item, with_text) for item in items]
        rows = session.execute(
            select(Assignment, User.username)
            .join(User, User.id == Assignment.user_id)
            .where(Assignment.project_id == project.id, Assignment.status == DONE)
            .order_by(Assignment.submitted_at, Assignment.id)
        ).all()
        live = session.scalars(select(Assignment.id).where(
            Assignment.project_id == project.id, Assignment.status == LEASED, Assignment.lease_expires_at >= now)).all()
    votes = [
        Vote(a.id, a.item_id, username, a.left, a.verdict, a.preferred, a.rationale, a.submitted_at, a.seconds,
             a.is_gold, a.gold_correct)
        for a, username in rows
    ]
    return ProjectVotes(project, item_rows, votes, len(live))


def _item_row(item: Item, with_text: bool) -> ItemRow:
    decode = json.loads if with_text else (lambda _: [])
    return ItemRow(item.id, item.position, item.source, decode(item.prompt), decode(item.response_0),
                   decode(item.response_1), item.gold_answer, item.judge_name, item.judge_winner, item.judge_prob,
                   item.judge_flip)


def outcome(counts: Counter) -> str | None:
    """The plurality outcome of an item's votes ("0", "1", "tie", "both_bad"); None when the top is shared."""
    if not counts:
        return None
    top = max(counts.values())
    leaders = [o for o in OUTCOMES if counts[o] == top]
    return leaders[0] if len(leaders) == 1 else None
