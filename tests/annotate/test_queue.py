"""The queue: least-annotated first, overlap, leases, skip, undo, gold and qualification, and concurrency."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from directalign.annotate import queue
from directalign.annotate.db import Database
from directalign.annotate.models import DONE, Assignment, Item
from tests.annotate.conftest import add_project, add_users


def _vote(db, project, user, verdict="a"):
    task = queue.claim(db, project, user).task
    assert task is not None
    queue.submit(db, user, task.assignment_id, verdict)
    return task


def _done_per_item(db: Database) -> Counter:
    with db.read() as session:
        rows = session.execute(select(Assignment.item_id, func.count()).where(Assignment.status == DONE)
                               .group_by(Assignment.item_id)).all()
    return Counter(dict(rows))


def test_least_annotated_first_and_overlap_caps_votes(db):
    project = add_project(db, n=3, overlap=2)
    users = add_users(db, ["u1", "u2", "u3", "u4"])
    firsts = [_vote(db, project, users[name]).item_id for name in ("u1", "u2", "u3")]
    assert len(set(firsts)) == 3  # three annotators, three different items: each had 0 votes
    _vote(db, project, users["u1"])  # u1's second item: the first of the others (one vote each), in order
    assert _done_per_item(db)[firsts[1]] == 2
    fourth = [_vote(db, project, users["u4"]).item_id for _ in range(2)]
    assert fourth == [firsts[0], firsts[2]]  # least taken first: the two items that still had one vote
    assert sorted(_done_per_item(db).values()) == [2, 2, 2]
    claimed = queue.claim(db, project, users["u4"])
    assert claimed.task is None and claimed.reason == "done"  # every item is full at overlap 2


def test_a_live_lease_is_given_again_and_counts_against_overlap(db, clock):
    project = add_project(db, n=1, overlap=1, lease_seconds=60)
    users = add_users(db, ["u1", "u2"])
    first = queue.claim(db, project, users["u1"]).task
    again = queue.claim(db, project, users["u1"]).task
    assert again.assignment_id == first.assignment_id and (again.a, again.b) == (first.a, first.b)
    assert queue.claim(db, project, users["u2"]).task is None  # the only slot is leased
    clock.advance(61)
    taken_over = queue.claim(db, project, users["u2"]).task
    assert taken_over is not None and taken_over.item_id == first.item_id
    queue.submit(db, users["u2"], taken_over.assignment_id, "b")
    # u1's lease ran out and the item is full now: its late vote is refused, and it gets nothing new.
    with pytest.raises(queue.VoteConflict, match="lease ran out"):
        queue.submit(db, users["u1"], first.assignment_id, "a")
    assert queue.claim(db, project, users["u1"]).task is None


def test_a_run_out_lease_may_still_be_submitted_while_the_item_has_room(db, clock):
    project = add_project(db, n=1, overlap=2, lease_seconds=60)
    user = add_users(db, ["u1"])["u1"]
    task = queue.claim(db, project, user).task
    clock.advance(3600)
    result = queue.submit(db, user, task.assignment_id, "tie")
    assert result.preferred == "tie"
    with db.read() as session:
        assert session.get(Assignment, task.assignment_id).seconds == pytest.approx(3600)


def test_sides_are_random_per_assignment_and_votes_are_stored_by_response(db):
    project = add_project(db, n=60, overlap=1)
    user = add_users(db, ["u1"])["u1"]
    lefts = []
    for _ in range(60):
        task = queue.claim(db, project, user).task
        left = 0 if task.a[0]["content"].startswith("good") else 1
        lefts.append(left)
        result = queue.submit(db, user, task.assignment_id, "a")  # always the left side
        assert result.preferred == str(left)
    assert 10 < sum(lefts) < 50  # both sides came up (p < 1e-6 of failing by chance)
    with db.read() as session:
        stored = session.scalars(select(Assignment.left).order_by(Assignment.id)).all()
    assert stored == lefts


def test_skip_frees_the_slot_and_the_item_never_returns(db):
    project = add_project(db, n=2, overlap=1)
    users = add_users(db, ["u1", "u2"])
    task = queue.claim(db, project, users["u1"]).task
    queue.skip(db, users["u1"], task.assignment_id)
    other = queue.claim(db, project, users["u1"]).task
    assert other.item_id != task.item_id
    assert queue.claim(db, project, users["u2"]).task.item_id == task.item_id


def test_undo_makes_the_last_vote_a_lease_again(db):
    project = add_project(db, n=3, overlap=1)
    user = add_users(db, ["u1"])["u1"]
    first = _vote(db, project, user, "a")
    pending = queue.claim(db, project, user).task
    assert queue.undo(db, project, user) == first.assignment_id
    back = queue.claim(db, project, user).task
    assert back.assignment_id == first.assignment_id  # the undone item is shown again, not the pending one
    queue.submit(db, user, back.assignment_id, "b")
    assert queue.claim(db, project, user).task.assignment_id == pending.assignment_id
    assert queue.my_votes(db, project, user)[0]["verdict"] == "b"


def test_a_retried_vote_is_accepted_once_and_a_different_one_refused(db):
    project = add_project(db, n=1)
    user = add_users(db, ["u1"])["u1"]
    task = queue.claim(db, project, user).task
    assert not queue.submit(db, user, task.assignment_id, "a", "same").duplicate
    assert queue.submit(db, user, task.assignment_id, "a", "same").duplicate
    with pytest.raises(queue.VoteConflict, match="undo it first"):
        queue.submit(db, user, task.assignment_id, "b")
    with pytest.raises(ValueError, match="verdict must be one of"):
        queue.submit(db, user, task.assignment_id, "maybe")


def test_another_annotators_assignment_is_not_found(db):
    project = add_project(db, n=1)
    users = add_users(db, ["u1", "u2"])
    task = queue.claim(db, project, users["u1"]).task
    for action in (lambda: queue.submit(db, users["u2"], task.assignment_id, "a"),
                   lambda: queue.skip(db, users["u2"], task.assignment_id)):
        with pytest.raises(queue.AssignmentNotFound):
            action()


def test_qualification_round_gates_the_regular_items(db):
    project = add_project(db, n=5, gold=4, qualification_size=3, qualification_pass=0.6)
    users = add_users(db, ["good", "bad"])
    for name, right in (("good", True), ("bad", False)):
        for _ in range(3):
            task = queue.claim(db, project, users[name]).task
            assert task.qualification and task.a[0]["content"].split()[0] in ("right", "wrong")
            correct = "a" if task.a[0]["content"].startswith("right") else "b"
            result = queue.submit(db, users[name], task.assignment_id, correct if right else "tie")
            assert result.gold == {"correct": right, "expected": correct}  # feedback inside qualification
    regular = queue.claim(db, project, users["good"]).task
    assert not regular.qualification and regular.a[0]["content"].split()[0] in ("good", "bad")
    blocked = queue.claim(db, project, users["bad"])
    assert blocked.task is None and "qualification not passed (0/3" in blocked.reason


def test_gold_is_mixed_in_at_its_rate_scored_once_and_silent_without_feedback(db):
    project = add_project(db, n=200, gold=30, overlap=1, gold_rate=0.25)
    user = add_users(db, ["u1"])["u1"]
    gold_seen = 0
    for _ in range(80):
        task = queue.claim(db, project, user).task
        is_gold = task.a[0]["content"].split()[0] in ("right", "wrong")
        gold_seen += is_gold
        result = queue.submit(db, user, task.assignment_id, "a")
        assert result.gold is None  # silent gold: no feedback
    assert 8 <= gold_seen <= 32  # Binomial(80, 0.25): mean 20, this band is > 4 standard deviations
    with db.read() as session:
        gold_assignment = session.scalars(select(Assignment).where(Assignment.is_gold)).first()
    first_score = gold_assignment.gold_correct
    queue.undo(db, project, user)  # undo the last vote (gold or not), then answer again the other way
    task = queue.claim(db, project, user).task
    queue.submit(db, user, task.assignment_id, "b")
    with db.read() as session:
        assert session.get(Assignment, gold_assignment.id).gold_correct == first_score


def test_concurrent_claims_never_duplicate_nor_overcollect(any_db):
    """16 threads (8 annotators, 2 threads each, as two browser tabs) race through 40 items at overlap 3."""
    db = any_db
    project = add_project(db, n=40, overlap=3)
    users = list(add_users(db, [f"u{i}" for i in range(8)]).values())
    acknowledged, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def annotator(user_id: int) -> None:
        start.wait()
        try:
            while (task := queue.claim(db, project, user_id).task) is not None:
                # Both tabs of one annotator may hold the same lease; the second identical vote is a retry.
                if not queue.submit(db, user_id, task.assignment_id, "a").duplicate:
                    with lock:
                        acknowledged.append((user_id, task.item_id))
        except Exception as err:  # noqa: BLE001 - the test reports any error of any thread
            errors.append(repr(err))

    threads = [threading.Thread(target=annotator, args=(u,)) for u in users for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(acknowledged) == len(set(acknowledged)) == 120  # nobody voted twice on an item; all collected
    assert set(_done_per_item(db).values()) == {3}
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 40
        pairs = session.execute(select(Assignment.item_id, Assignment.user_id)).all()
    assert len(pairs) == len(set(pairs))
