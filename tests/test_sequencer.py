"""The per-conversation sequencer, directly (no network): events leave in seq order whatever
order the inserts finish in, failures leave gaps without blocking, and history is held below
the first message still in flight."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from chat.errors import RateLimited
from chat.events import Event
from chat.messages import TypingThrottle
from chat.sequencer import IDLE_LINES_MAX, Sequencer
from chat.store.conversations import Conversation


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[list[str], Event]] = []

    def __call__(self, user_ids: Iterable[str], event: Event) -> None:
        self.events.append((list(user_ids), event))

    @property
    def names(self) -> list[str]:
        return [e["name"] for _, e in self.events]


def ev(name: str) -> Event:
    return {"type": "test", "name": name}


def test_events_leave_in_seq_order_whatever_order_the_inserts_finish() -> None:
    published = Published()
    seq = Sequencer(published)
    with seq.line("c") as line:
        s1, s2, s3 = (seq.reserve(line, n) for n in (1, 2, 3))
        assert seq.visible_until("c") == 0
        seq.resolve(line, s3, (["u"], ev("3")))
        seq.resolve(line, s2, (["u"], ev("2")))
        assert published.names == []  # 1 is still being stored
        assert seq.visible_until("c") == 0
        seq.resolve(line, s1, (["u"], ev("1")))
        assert published.names == ["1", "2", "3"]
        assert seq.visible_until("c") is None


def test_a_failed_slot_is_a_gap_that_blocks_nothing() -> None:
    published = Published()
    seq = Sequencer(published)
    with seq.line("c") as line:
        s4, s5, s6 = (seq.reserve(line, n) for n in (4, 5, 6))
        seq.resolve(line, s5, (["u"], ev("5")))
        assert seq.visible_until("c") == 3
        seq.resolve(line, s4, None)  # its insert failed: nobody sees anything of it
        assert published.names == ["5"]
        assert seq.visible_until("c") == 5
        seq.resolve(line, s6, (["u"], ev("6")))
        assert published.names == ["5", "6"]


def test_group_events_keep_their_place_among_messages() -> None:
    published = Published()
    seq = Sequencer(published)
    with seq.line("c") as line:
        s1 = seq.reserve(line, 1)
        seq.enqueue(line, ["u", "v"], ev("member_added"))
        s2 = seq.reserve(line, 2)
        seq.resolve(line, s2, (["u", "v"], ev("2")))
        assert published.names == []
        seq.resolve(line, s1, (["u"], ev("1")))
        assert published.names == ["1", "member_added", "2"]
        assert published.events[0][0] == ["u"]  # each with the recipients of its moment


def test_lines_are_forgotten_when_idle_and_are_per_conversation() -> None:
    published = Published()
    seq = Sequencer(published)
    with seq.line("a") as a, seq.line("b") as b:
        assert a is not b
        slot = seq.reserve(a, 1)
        seq.resolve(b, seq.reserve(b, 1), (["u"], ev("b1")))
        assert published.names == ["b1"]  # b does not wait for a
        seq.resolve(a, slot, (["u"], ev("a1")))
    assert seq._lines == {}
    with seq.line("a") as again:
        assert again is not a


def test_typing_throttle_drops_repeats_and_limits_the_user() -> None:
    throttle = TypingThrottle()
    assert throttle.allow("u", "c1") is True
    assert throttle.allow("u", "c1") is False  # within the interval: dropped
    assert throttle.allow("v", "c1") is True  # per user
    allowed = 1
    with pytest.raises(RateLimited) as exc:
        for i in range(100):
            assert throttle.allow("u", f"other{i}") is True
            allowed += 1
    assert allowed == 10 and exc.value.retry_after_secs > 0


def test_idle_lines_keep_their_snapshot_within_the_budget() -> None:
    now = datetime.now(UTC)
    conv = Conversation("c0", "dm", None, (), (), {}, 0, 0, now, now)
    seq = Sequencer(Published())
    for i in range(IDLE_LINES_MAX + 5):
        with seq.line(f"c{i}") as line:
            line.snapshot = dataclasses.replace(conv, id=f"c{i}")
    assert seq.snapshot("c0") is None  # the least recently used went first
    assert seq.snapshot(f"c{IDLE_LINES_MAX + 4}") is not None
    assert len(seq._lines) == IDLE_LINES_MAX
    with seq.line("plain"):
        pass
    assert seq.snapshot("plain") is None and "plain" not in seq._lines


def test_a_seq_heard_from_another_process_moves_the_next_one_past_it() -> None:
    now = datetime.now(UTC)
    conv = Conversation("c", "dm", None, (), (), {}, 0, 0, now, now)
    seq = Sequencer(Published())
    with seq.line("c") as line:
        line.snapshot = dataclasses.replace(conv, last_seq=4)
    seq.heard("c", 7)  # another process stored seq 7
    seq.heard("c", 5)  # an older one heard late changes nothing
    snapshot = seq.snapshot("c")
    assert snapshot is not None and snapshot.last_seq == 7
    assert snapshot.members is conv.members  # the membership kept: no read again
    seq.heard("unknown", 3)  # a conversation this process does not remember: nothing kept
    assert seq.snapshot("unknown") is None
