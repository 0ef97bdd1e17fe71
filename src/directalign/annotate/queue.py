"""The queue: who gets which item next, leases that run out, votes, skips and undo.

Rules, all inside one transaction per call (SQLite: BEGIN IMMEDIATE, one writer at a time; PostgreSQL: the
least-annotated free item is locked FOR UPDATE SKIP LOCKED and a user's claims are serialised on their row):
- An item is *taken* by its votes and its live leases (status leased, lease not run out). A regular item goes
  to an annotator only while taken < overlap, least taken first, then in project order; a gold item goes to
  every annotator once. The (item, annotator) pair is unique in the database, so no item reaches one annotator
  twice, whatever the code above it does.
- An annotator holding a live lease gets it again (a reload is not a new item). A lease that ran out frees its
  slot; its annotator may still renew or submit it while the item has room.
- Qualification: the first `qualification_size` items are gold; below `qualification_pass` accuracy the
  annotator gets no more items. Afterwards a gold item is mixed in with probability `gold_rate`.
- A gold answer is scored once, at the first submission: undo and resubmit cannot turn feedback into accuracy.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from directalign.annotate.db import Database, audit
from directalign.annotate.models import DONE, EXPIRED, LEASED, SKIPPED, VERDICTS, Assignment, Item, Project, User
from directalign.data.types import Message

MAX_RATIONALE = 5000
CANDIDATE_WINDOW = 64
_SIDES = random.SystemRandom()


class AssignmentNotFound(LookupError):
    """No such assignment for this annotator (another annotator's looks the same: nothing leaks)."""


class VoteConflict(RuntimeError):
    """The assignment cannot take this vote (already voted otherwise, skipped, or its item is full)."""


@dataclass
class Progress:
    mine: int  # votes this annotator gave in the project, gold included
    project_votes: int  # votes on regular items
    project_target: int  # regular items x overlap


@dataclass
class Task:
    assignment_id: int
    item_id: int
    prompt: list[Message]
    a: list[Message]
    b: list[Message]
    lease_expires_at: float
    progress: Progress
    qualification: bool = False


@dataclass
class Claim:
    task: Task | None
    reason: str = ""  # why there is no task: "done" (nothing left) or a sentence (qualification failed)


@dataclass
class Submitted:
    assignment_id: int
    preferred: str
    duplicate: bool = False  # the same vote sent again (a retry): accepted, nothing changed
    gold: dict | None = None  # {"correct", "expected"} when the item is gold and feedback is on


def claim(db: Database, project: Project, user_id: int, ip: str | None = None) -> Claim:
    """The annotator's next item (see the module docstring), leased for project.lease_seconds."""
    with db.write(durable=False) as session:
        now = db.clock()
        if db.dialect == "postgresql":
            session.execute(select(User.id).where(User.id == user_id).with_for_update())
        assignment = _resume(session, db, project, user_id, now)
        blocked = ""
        if assignment is None:
            item, blocked = _next_item(session, db, project, user_id, now)
            if item is not None:
                assignment = Assignment(project_id=project.id, item_id=item.id, user_id=user_id,
                                        left=_SIDES.randrange(2), is_gold=item.gold_answer is not None,
                                        status=LEASED, leased_at=now, lease_expires_at=now + project.lease_seconds)
                session.add(assignment)
                session.flush()
                audit(session, now, "claim", user_id, project.id, ip, assignment=assignment.id, item=item.id,
                      left=assignment.left)
        if assignment is None:
            return Claim(None, blocked or "done")
        return Claim(_task(session, project, assignment))


def submit(
    db: Database, user_id: int, assignment_id: int, verdict: str, rationale: str = "", ip: str | None = None
) -> Submitted:
    """Record a vote; ValueError for a bad verdict, AssignmentNotFound, or VoteConflict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    rationale = (rationale or "").strip()
    if len(rationale) > MAX_RATIONALE:
        raise ValueError(f"rationale is longer than {MAX_RATIONALE} characters")
    with db.write() as session:
        now = db.clock()
        assignment = _own(session, user_id, assignment_id)
        project = session.get(Project, assignment.project_id)
        if assignment.status == DONE:
            if assignment.verdict == verdict and (assignment.rationale or "") == rationale:
                return Submitted(assignment.id, assignment.preferred, duplicate=True)
            raise VoteConflict("this item already has your vote; undo it first to change it")
        if assignment.status == SKIPPED:
            raise VoteConflict("you skipped this item")
        live = assignment.status == LEASED and assignment.lease_expires_at >= now
        if not live and not _has_room(session, db, project, assignment.item_id, user_id, now):
            raise VoteConflict("the lease ran out and the item has all its votes; take the next item")
        item = session.get(Item, assignment.item_id)
        _count_vote(session, item.id, +1)
        assignment.status, assignment.verdict, assignment.rationale = DONE, verdict, rationale or None
        assignment.preferred = preferred_response(assignment.left, verdict)
        assignment.submitted_at, assignment.seconds = now, now - assignment.leased_at
        if item.gold_answer is not None and assignment.gold_correct is None:
            assignment.gold_correct = assignment.preferred == str(item.gold_answer)
        audit(session, now, "vote", user_id, project.id, ip, assignment=assignment.id, item=item.id,
              verdict=verdict, preferred=assignment.preferred, rationale=rationale)
        gold = None
        in_qualification = _scored_gold(session, project, user_id) <= project.qualification_size
        if item.gold_answer is not None and (project.gold_feedback or in_qualification):
            expected = "a" if item.gold_answer == assignment.left else "b"
            gold = {"correct": bool(assignment.gold_correct), "expected": expected}
        return Submitted(assignment.id, assignment.preferred, gold=gold)


def skip(db: Database, user_id: int, assignment_id: int, ip: str | None = None) -> None:
    """Give the item back for good: its slot is free and this annotator never sees it again."""
    with db.write() as session:
        assignment = _own(session, user_id, assignment_id)
        if assignment.status == DONE:
            raise VoteConflict("this item already has your vote; undo it first")
        assignment.status = SKIPPED
        audit(session, db.clock(), "skip", user_id, assignment.project_id, ip, assignment=assignment.id)


def undo(db: Database, project: Project, user_id: int, ip: str | None = None) -> int | None:
    """Take back the annotator's last vote in the project: it becomes their live lease again (returns its id).

    Their other live lease is released, so that the next claim shows the undone item.
    """
    with db.write() as session:
        now = db.clock()
        last = session.scalars(
            select(Assignment)
            .where(Assignment.user_id == user_id, Assignment.project_id == project.id, Assignment.status == DONE)
            .order_by(Assignment.submitted_at.desc(), Assignment.id.desc())
            .limit(1)
        ).first()
        if last is None:
            return None
        for other in _own_leases(session, project.id, user_id):
            other.status = EXPIRED
        audit(session, now, "undo", user_id, project.id, ip, assignment=last.id, verdict=last.verdict,
              rationale=last.rationale)
        _count_vote(session, last.item_id, -1)
        last.status, last.verdict, last.preferred, last.rationale = LEASED, None, None, None
        last.submitted_at = last.seconds = None
        last.leased_at, last.lease_expires_at = now, now + project.lease_seconds
        return last.id


def my_votes(db: Database, project: Project, user_id: int) -> list[dict]:
    """This annotator's own votes in the project, oldest first (what the annotator may read back)."""
    with db.read() as session:
        rows = session.scalars(
            select(Assignment)
            .where(Assignment.user_id == user_id, Assignment.project_id == project.id, Assignment.status == DONE)
            .order_by(Assignment.submitted_at)
        ).all()
    return [{"assignment_id": a.id, "item_id": a.item_id, "verdict": a.verdict, "rationale": a.rationale,
             "submitted_at": a.submitted_at} for a in rows]


def preferred_response(left: int, verdict: str) -> str:
    """A verdict on the sides shown ("a" = the left one) in response terms: "0", "1", "tie" or "both_bad"."""
    if verdict == "a":
        return str(left)
    if verdict == "b":
        return str(1 - left)
    return verdict


# Inside a transaction.


def _own(session: Session, user_id: int, assignment_id: int) -> Assignment:
    # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): two tabs posting the same vote are serialised, so
    # the second sees the first's vote and is answered as a duplicate.
    assignment = session.get(Assignment, assignment_id, with_for_update=True)
    if assignment is None or assignment.user_id != user_id:
        raise AssignmentNotFound(f"no assignment {assignment_id} of yours")
    return assignment


def _own_leases(session: Session, project_id: int, user_id: int) -> list[Assignment]:
    return list(session.scalars(
        select(Assignment).where(Assignment.user_id == user_id, Assignment.project_id == project_id,
                                 Assignment.status.in_((LEASED, EXPIRED)))
        .order_by(Assignment.leased_at.desc(), Assignment.id.desc())
    ))


def _resume(session: Session, db: Database, project: Project, user_id: int, now: float) -> Assignment | None:
    """The annotator's live lease, renewed; else their newest run-out one whose item still has room."""
    leases = _own_leases(session, project.id, user_id)
    live = [a for a in leases if a.status == LEASED and a.lease_expires_at >= now]
    for assignment in live or leases:
        if live or assignment.is_gold or _has_room(session, db, project, assignment.item_id, user_id, now):
            if assignment.status != LEASED or assignment.lease_expires_at < now:
                assignment.leased_at = now  # time on the item counts from when it is shown again
            assignment.status, assignment.lease_expires_at = LEASED, now + project.lease_seconds
            return assignment
        assignment.status = EXPIRED
    return None


def _taken(item_id, now: float, exclude_user: int | None = None):
    """Votes plus live leases on an item (a correlated count)."""
    condition = and_(
        Assignment.item_id == item_id,
        or_(Assignment.status == DONE, and_(Assignment.status == LEASED, Assignment.lease_expires_at >= now)),
    )
    if exclude_user is not None:
        condition = and_(condition, Assignment.user_id != exclude_user)
    return select(func.count(Assignment.id)).where(condition).scalar_subquery()


def _has_room(session: Session, db: Database, project: Project, item_id: int, user_id: int,
              now: float) -> bool:
    query = select(Item.id).where(Item.id == item_id)
    if db.dialect == "postgresql":
        session.execute(query.with_for_update())
    return session.scalar(select(_taken(item_id, now, exclude_user=user_id))) < project.overlap


def _next_item(session: Session, db: Database, project: Project, user_id: int, now: float) -> tuple[Item | None, str]:
    gold_votes = session.scalars(
        select(Assignment.gold_correct)
        .where(Assignment.user_id == user_id, Assignment.project_id == project.id, Assignment.is_gold,
               Assignment.gold_correct.is_not(None))
        .order_by(Assignment.submitted_at)
    ).all()
    if len(gold_votes) < project.qualification_size:
        gold = _gold_item(session, project, user_id)
        return gold, "" if gold else "no qualification items are left for you; ask an admin"
    qualifying = gold_votes[: project.qualification_size]
    if qualifying and sum(qualifying) / len(qualifying) < project.qualification_pass:
        return None, (f"qualification not passed ({sum(qualifying)}/{len(qualifying)} known answers right, "
                      f"{project.qualification_pass:.0%} needed)")
    if project.gold_rate > 0 and _SIDES.random() < project.gold_rate:
        gold = _gold_item(session, project, user_id)
        if gold is not None:
            return gold, ""
    return _regular_item(session, db, project, user_id, now), ""


def _unseen(user_id: int):
    return ~select(Assignment.id).where(Assignment.item_id == Item.id, Assignment.user_id == user_id).exists()


def _gold_item(session: Session, project: Project, user_id: int) -> Item | None:
    candidates = session.scalars(
        select(Item).where(Item.project_id == project.id, Item.gold_answer.is_not(None), _unseen(user_id))
    ).all()
    return _SIDES.choice(candidates) if candidates else None


def _regular_item(session: Session, db: Database, project: Project, user_id: int, now: float) -> Item | None:
    """The least-voted regular item (then in project order) this annotator has not seen and that has room.

    Candidates come from the (project, n_votes, position) index a window at a time; live leases decide room. On
    PostgreSQL the chosen row is locked (SKIP LOCKED: a row another claim holds is passed over) and re-checked.
    """
    query = (
        select(Item)
        .where(Item.project_id == project.id, Item.gold_answer.is_(None), Item.n_votes < project.overlap,
               _unseen(user_id))
        .order_by(Item.n_votes, Item.position)
        .limit(CANDIDATE_WINDOW)
    )
    offset = 0
    while candidates := session.scalars(query.offset(offset)).all():
        leases = _live_leases(session, [item.id for item in candidates], now)
        for item in candidates:
            if item.n_votes + leases.get(item.id, 0) >= project.overlap:
                continue
            if db.dialect != "postgresql":
                return item
            # populate_existing: re-read n_votes under the lock, not the identity map's copy from the window.
            locked = session.scalars(select(Item).where(Item.id == item.id).with_for_update(skip_locked=True)
                                     .execution_options(populate_existing=True)).first()
            if locked is not None and locked.n_votes + _live_leases(session, [item.id], now).get(item.id, 0) \
                    < project.overlap:
                return locked
        offset += CANDIDATE_WINDOW
    return None


def _count_vote(session: Session, item_id: int, change: int) -> None:
    """n_votes += change in SQL, not read-modify-write: two concurrent votes on one item both count."""
    session.execute(update(Item).where(Item.id == item_id).values(n_votes=Item.n_votes + change))


def _live_leases(session: Session, item_ids: list[int], now: float) -> dict[int, int]:
    return dict(session.execute(
        select(Assignment.item_id, func.count())
        .where(Assignment.item_id.in_(item_ids), Assignment.status == LEASED, Assignment.lease_expires_at >= now)
        .group_by(Assignment.item_id)
    ).all())


def _scored_gold(session: Session, project: Project, user_id: int) -> int:
    """How many gold answers of this annotator are scored (the qualification round is the first ones)."""
    return session.scalar(
        select(func.count()).where(Assignment.user_id == user_id, Assignment.project_id == project.id,
                                   Assignment.is_gold, Assignment.gold_correct.is_not(None))
    )


def _task(session: Session, project: Project, assignment: Assignment) -> Task:
    item = session.get(Item, assignment.item_id)
    responses = [json.loads(item.response_0), json.loads(item.response_1)]
    return Task(
        assignment_id=assignment.id,
        item_id=item.id,
        prompt=json.loads(item.prompt),
        a=responses[assignment.left],
        b=responses[1 - assignment.left],
        lease_expires_at=assignment.lease_expires_at,
        progress=progress(session, project, assignment.user_id),
        qualification=assignment.is_gold
        and _scored_gold(session, project, assignment.user_id) < project.qualification_size,
    )


def progress(session: Session, project: Project, user_id: int) -> Progress:
    mine = session.scalar(select(func.count()).where(
        Assignment.project_id == project.id, Assignment.user_id == user_id, Assignment.status == DONE))
    votes = session.scalar(select(func.count()).where(
        Assignment.project_id == project.id, Assignment.status == DONE, ~Assignment.is_gold))
    items = session.scalar(select(func.count()).where(Item.project_id == project.id, Item.gold_answer.is_(None)))
    return Progress(mine, votes, items * project.overlap)
