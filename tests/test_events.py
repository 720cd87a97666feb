"""Tests for chat.events: ordering, acks, bounds, waiters, resume, publish, sweep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat.events import EventQueue, QueueRegistry


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingListener:
    """Records attach/detach transitions reported by the registry."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_user_attached(self, user_id: str) -> None:
        self.calls.append(("attached", user_id))

    def on_user_detached(self, user_id: str) -> None:
        self.calls.append(("detached", user_id))


class RecordingSink:
    """An EventSink that records what the queue hands it."""

    def __init__(self) -> None:
        self.events: list[int] = []
        self.ended = 0

    def on_event(self, event_id: int, event: dict[str, Any]) -> None:
        self.events.append(event_id)

    def on_end(self) -> None:
        self.ended += 1


def ev(n: int) -> dict[str, Any]:
    return {"type": "test", "n": n}


def ids(items: list[dict[str, Any]]) -> list[int]:
    return [item["id"] for item in items]


async def settle() -> None:
    """Let scheduled callbacks and woken tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- EventQueue ---------------------------------------------------------------


def test_ids_start_at_one_and_increase_in_order() -> None:
    q = EventQueue("q", "alice", "s")
    assert [q.push(ev(n)) for n in range(3)] == [1, 2, 3]
    items = q.events_after(0)
    assert items == [
        {"id": 1, "event": ev(0)},
        {"id": 2, "event": ev(1)},
        {"id": 3, "event": ev(2)},
    ]
    assert q.events_after(2) == [{"id": 3, "event": ev(2)}]
    assert q.last_event_id == 3


def test_ack_prunes_and_ignores_out_of_range_values() -> None:
    q = EventQueue("q", "alice", "s")
    for n in range(5):
        q.push(ev(n))
    q.ack(3)
    assert q.acked_id == 3
    assert q.pending_count == 2
    assert ids(q.events_after(0)) == [4, 5]  # 1..3 are gone for good
    q.ack(99)  # beyond the last id: ignored, nothing dropped
    assert q.acked_id == 3
    assert q.pending_count == 2
    q.ack(1)  # below the current ack: ignored
    assert q.acked_id == 3
    assert q.can_resume_from(3) is True
    assert q.can_resume_from(2) is False
    assert q.can_resume_from(5) is True
    assert q.can_resume_from(6) is False


def test_events_after_acks_what_it_was_given() -> None:
    q = EventQueue("q", "alice", "s")
    for n in range(4):
        q.push(ev(n))
    assert ids(q.events_after(2)) == [3, 4]
    assert q.acked_id == 2
    assert q.pending_count == 2


def test_overflow_closes_the_queue_and_frees_it() -> None:
    q = EventQueue("q", "alice", "s", max_events=3)
    assert [q.push(ev(n)) for n in range(3)] == [1, 2, 3]
    assert q.overflowed is False
    assert q.push(ev(3)) == 0
    assert q.overflowed is True
    assert q.closed is True
    assert q.pending_count == 0
    assert q.push(ev(4)) == 0  # closed: no-op
    assert q.can_resume_from(0) is False


def test_acks_keep_a_queue_below_its_bound() -> None:
    q = EventQueue("q", "alice", "s", max_events=2)
    for n in range(10):
        assert q.push(ev(n)) == n + 1
        q.ack(n + 1)
    assert q.overflowed is False
    assert q.pending_count == 0


def test_overflowed_queue_cannot_be_resumed() -> None:
    reg = QueueRegistry(max_events=2)
    q = reg.create("alice", "s")
    for n in range(3):
        q.push(ev(n))
    assert q.overflowed is True
    q2, resumed = reg.resume("alice", "s", q.queue_id, reg.epoch, 0)
    assert resumed is False
    assert q2 is not q
    assert q2.queue_id != q.queue_id
    assert q2.last_event_id == 0
    assert q in reg.sweep()
    assert reg.get(q.queue_id) is None


def test_events_after_without_prune_keeps_everything() -> None:
    q = EventQueue("q", "alice", "s")
    for n in range(4):
        q.push(ev(n))
    assert ids(q.events_after(2, prune=False)) == [3, 4]
    assert q.acked_id == 0
    assert q.pending_count == 4
    assert q.events_after(4, prune=False) == []
    assert ids(q.events_after(0, prune=False)) == [1, 2, 3, 4]


async def test_wait_without_prune_leaves_acks_to_the_client() -> None:
    # A WebSocket writer's cursor is what it sent; only the client's ack prunes.
    q = EventQueue("q", "alice", "s")
    q.push(ev(1))
    assert ids(await q.wait_after(0, 1.0, prune=False)) == [1]
    waiting = asyncio.create_task(q.wait_after(1, 5.0, prune=False))
    await settle()
    q.push(ev(2))
    assert ids(await asyncio.wait_for(waiting, 1.0)) == [2]
    assert q.acked_id == 0
    assert q.pending_count == 2
    q.ack(2)
    assert q.pending_count == 0


async def test_taken_over_transport_cannot_supersede_its_successor() -> None:
    q = EventQueue("q", "alice", "s")
    ws_token = q.attach()
    poll_token = q.attach()
    poll_wait = asyncio.create_task(q.wait_after(0, 5.0, token=poll_token))
    await settle()
    # The old WebSocket writer loops back to waiting with its stale token.
    assert await q.wait_after(0, 5.0, token=ws_token) == []
    assert poll_wait.done() is False
    q.push(ev(1))
    assert ids(await asyncio.wait_for(poll_wait, 1.0)) == [1]


async def test_wait_returns_pending_events_at_once() -> None:
    q = EventQueue("q", "alice", "s")
    q.push(ev(1))
    q.push(ev(2))
    start = time.monotonic()
    items = await q.wait_after(1, 5.0)
    assert time.monotonic() - start < 1.0
    assert ids(items) == [2]
    assert q.acked_id == 1


async def test_wait_times_out_with_an_empty_heartbeat() -> None:
    q = EventQueue("q", "alice", "s")
    start = time.monotonic()
    assert await q.wait_after(0, 0.05) == []
    assert time.monotonic() - start >= 0.04
    assert q.has_waiter is False


async def test_wait_wakes_on_push() -> None:
    q = EventQueue("q", "alice", "s")
    task = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    assert task.done() is False
    assert q.has_waiter is True
    q.push(ev(7))
    items = await asyncio.wait_for(task, 1.0)
    assert items == [{"id": 1, "event": ev(7)}]
    assert q.has_waiter is False


async def test_second_waiter_supersedes_the_first() -> None:
    q = EventQueue("q", "alice", "s")
    first = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    second = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    assert first.done() is True
    assert first.result() == []
    assert second.done() is False
    q.push(ev(1))
    assert ids(await asyncio.wait_for(second, 1.0)) == [1]


async def test_woken_waiter_taken_over_before_running_gets_nothing() -> None:
    # Exactly once: a push wakes the WebSocket writer, but long-polling takes the
    # queue over before the writer runs; only the new transport gets the event.
    q = EventQueue("q", "alice", "s")
    ws_token = q.attach()
    ws_wait = asyncio.create_task(q.wait_after(0, 5.0, token=ws_token))
    await settle()
    q.push(ev(1))  # wakes the writer, which has not run yet
    poll_token = q.attach()
    assert await asyncio.wait_for(ws_wait, 1.0) == []
    assert ids(await q.wait_after(0, 1.0, token=poll_token)) == [1]


async def test_woken_poll_superseded_before_running_gets_nothing() -> None:
    # Same race for long-polling, which waits without a token: a push wakes
    # poll 1, then poll 2 attaches before poll 1 runs; poll 2 alone gets it.
    q = EventQueue("q", "alice", "s")
    q.attach()
    first_poll = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    q.push(ev(1))
    q.attach()
    assert await asyncio.wait_for(first_poll, 1.0) == []
    assert ids(await q.wait_after(0, 1.0)) == [1]


async def test_unacknowledged_events_are_redelivered_to_the_same_cursor() -> None:
    # A poll whose response was lost is retried with the same cursor: the
    # events are kept until acknowledged, so the retry gets them again.
    q = EventQueue("q", "alice", "s")
    q.push(ev(1))
    assert ids(await q.wait_after(0, 1.0)) == [1]
    assert ids(await q.wait_after(0, 1.0)) == [1]
    assert await q.wait_after(1, 0.01) == []
    assert q.pending_count == 0


async def test_cancelled_wait_leaves_no_waiter() -> None:
    q = EventQueue("q", "alice", "s")
    task = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    assert q.has_waiter is True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert q.has_waiter is False
    # The queue still works for the next consumer.
    q.push(ev(1))
    assert ids(await q.wait_after(0, 1.0)) == [1]


async def test_attach_supersedes_previous_transport() -> None:
    q = EventQueue("q", "alice", "s")
    ws_token = q.attach()
    waiting = asyncio.create_task(q.wait_after(0, 5.0, token=ws_token))
    await settle()
    poll_token = q.attach()  # long-polling takes the queue over
    assert await asyncio.wait_for(waiting, 1.0) == []
    assert q.is_current(ws_token) is False
    assert q.is_current(poll_token) is True
    # The old transport can neither wait nor detach its successor.
    assert await q.wait_after(0, 5.0, token=ws_token) == []
    assert q.detach(ws_token) is False
    assert q.attached is True
    q.push(ev(1))
    assert ids(await q.wait_after(0, 1.0, token=poll_token)) == [1]
    assert q.detach(poll_token) is True
    assert q.attached is False


async def test_detach_ends_that_transports_wait() -> None:
    q = EventQueue("q", "alice", "s")
    token = q.attach()
    waiting = asyncio.create_task(q.wait_after(0, 5.0, token=token))
    await settle()
    assert q.detach(token) is True
    assert await asyncio.wait_for(waiting, 1.0) == []
    assert q.has_waiter is False


def test_a_subscribed_sink_gets_each_push_at_once_and_keeps_it_for_the_ack() -> None:
    q = EventQueue("q", "alice", "s")
    token = q.attach()
    q.push(ev(1))  # before subscribing: the transport reads it with events_after
    sink = RecordingSink()
    assert q.subscribe(token, sink) is True
    q.push(ev(2))
    q.push(ev(3))
    assert sink.events == [2, 3] and sink.ended == 0
    # Handed over, not consumed: only the client's ack drops them.
    assert ids(q.events_after(1, prune=False)) == [2, 3]
    q.ack(3)
    assert q.pending_count == 0


def test_a_takeover_ends_the_sink_and_a_detach_removes_it_silently() -> None:
    q = EventQueue("q", "alice", "s")
    old, sink = q.attach(), RecordingSink()
    assert q.subscribe(old, sink)
    new = q.attach()  # another transport takes the queue over
    assert sink.ended == 1
    q.push(ev(1))
    assert sink.events == []
    assert q.subscribe(old, RecordingSink()) is False  # a stale token cannot subscribe
    second = RecordingSink()
    assert q.subscribe(new, second)
    assert q.detach(new) is True
    q.push(ev(2))
    assert second.events == [] and second.ended == 0


def test_closing_and_overflow_end_the_sink() -> None:
    q = EventQueue("q", "alice", "s", max_events=2)
    sink = RecordingSink()
    assert q.subscribe(q.attach(), sink)
    q.push(ev(1))
    q.push(ev(2))
    q.push(ev(3))  # over the bound: the queue is dropped
    assert sink.events == [1, 2] and sink.ended == 1 and q.overflowed
    q.close()
    assert sink.ended == 1  # told once


def test_a_failing_sink_does_not_stop_a_publish(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(RecordingSink):
        def on_event(self, event_id: int, event: dict[str, Any]) -> None:
            raise RuntimeError("boom")

    registry = QueueRegistry()
    first, second = registry.create("alice", "s1"), registry.create("alice", "s2")
    assert first.subscribe(registry.attach(first), Broken())
    sink = RecordingSink()
    assert second.subscribe(registry.attach(second), sink)
    registry.publish(["alice"], ev(1))
    assert sink.events == [1] and first.last_event_id == 1
    assert "event sink failed" in caplog.text


async def test_closed_queue_still_delivers_what_was_pushed() -> None:
    q = EventQueue("q", "alice", "s")
    token = q.attach()
    waiting = asyncio.create_task(q.wait_after(0, 5.0, token=token))
    await settle()
    q.push({"type": "last"})
    q.close()
    q.close()  # idempotent
    assert await asyncio.wait_for(waiting, 1.0) == [{"id": 1, "event": {"type": "last"}}]
    assert q.closed is True
    assert q.attached is False
    # Nothing left: returns at once instead of waiting for the timeout.
    start = time.monotonic()
    assert await q.wait_after(1, 5.0, token=token) == []
    assert time.monotonic() - start < 1.0
    assert q.attach() == 0


async def test_close_wakes_an_idle_waiter_with_nothing() -> None:
    q = EventQueue("q", "alice", "s")
    waiting = asyncio.create_task(q.wait_after(0, 5.0))
    await settle()
    q.close()
    assert await asyncio.wait_for(waiting, 1.0) == []


# -- QueueRegistry: resume ----------------------------------------------------


def test_resume_good_cursor_returns_the_same_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    for n in range(3):
        q.push(ev(n))
    q.ack(1)
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 1)
    assert resumed is True
    assert got is q
    assert ids(got.events_after(1)) == [2, 3]
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 3)
    assert (got, resumed) == (q, True)


def test_resume_with_wrong_epoch_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    got, resumed = reg.resume("alice", "s1", q.queue_id, "previous-run", 0)
    assert resumed is False
    assert got is not q
    assert got.user_id == "alice"
    assert got.session_id == "s1"
    assert reg.get(got.queue_id) is got


def test_resume_of_another_users_queue_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    q.push(ev(1))
    got, resumed = reg.resume("mallory", "s9", q.queue_id, reg.epoch, 0)
    assert resumed is False
    assert got is not q
    assert got.user_id == "mallory"
    assert got.events_after(0) == []
    # Alice's queue is untouched.
    assert q.closed is False
    assert ids(q.events_after(0)) == [1]


def test_resume_with_pruned_cursor_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    for n in range(3):
        q.push(ev(n))
    q.ack(2)
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 1)
    assert resumed is False
    assert got is not q
    assert q.closed is False  # a late, stale request must not end the live queue


def test_resume_with_future_cursor_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    q.push(ev(1))
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 2)
    assert resumed is False
    assert got is not q


def test_resume_of_closed_or_unknown_queue_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    q.close()
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 0)
    assert resumed is False
    assert got is not q
    got2, resumed2 = reg.resume("alice", "s1", "no-such-queue", reg.epoch, 0)
    assert resumed2 is False
    assert got2 not in (q, got)
    got3, resumed3 = reg.resume("alice", "s1", None, None, 0)
    assert resumed3 is False
    assert got3.queue_id not in (q.queue_id, got.queue_id, got2.queue_id)
    assert len(reg) == 4


def test_queue_ids_and_epochs_are_unguessable() -> None:
    reg_a, reg_b = QueueRegistry(), QueueRegistry()
    assert reg_a.epoch != reg_b.epoch
    queue_ids = {reg_a.create("alice", "s").queue_id for _ in range(50)}
    assert len(queue_ids) == 50
    assert all(len(queue_id) >= 20 for queue_id in queue_ids)


# -- QueueRegistry: publishing ------------------------------------------------


def test_publish_reaches_every_tab_once() -> None:
    reg = QueueRegistry()
    a1, a2 = reg.create("alice", "sa"), reg.create("alice", "sa2")
    b = reg.create("bob", "sb")
    c = reg.create("carol", "sc")
    event = {"type": "message.new", "text": "hi"}
    reg.publish(["alice", "bob", "alice", "nobody"], event)
    assert a1.events_after(0) == [{"id": 1, "event": event}]
    assert a2.events_after(0) == [{"id": 1, "event": event}]
    assert b.events_after(0) == [{"id": 1, "event": event}]
    assert c.events_after(0) == []
    assert reg.queues_of_user("alice") == [a1, a2]


def test_publish_skips_closed_queues() -> None:
    reg = QueueRegistry()
    a1, a2 = reg.create("alice", "s"), reg.create("alice", "s")
    a1.close()
    reg.publish(["alice"], ev(1))
    assert a1.last_event_id == 0
    assert a2.last_event_id == 1
    assert reg.queues_of_user("alice") == [a2]


def test_publish_to_queues_dedupes_and_ignores_unknown_ids() -> None:
    reg = QueueRegistry()
    q1, q2 = reg.create("alice", "s"), reg.create("bob", "t")
    reg.publish_to_queues([q1.queue_id, q1.queue_id, "gone"], ev(1))
    assert ids(q1.events_after(0)) == [1]
    assert q2.events_after(0) == []


async def test_end_session_delivers_session_ended_then_closes() -> None:
    reg = QueueRegistry()
    q1, q2 = reg.create("alice", "s1"), reg.create("alice", "s1")
    other = reg.create("alice", "s2")
    q2.push(ev(1))
    token = reg.attach(q1)
    waiting = asyncio.create_task(q1.wait_after(0, 5.0, token=token))
    await settle()
    reg.end_session("s1")
    assert await asyncio.wait_for(waiting, 1.0) == [{"id": 1, "event": {"type": "session.ended"}}]
    assert q1.closed is True
    assert q2.closed is True
    # A consumer that was not waiting still reads it, after what came before.
    assert [item["event"]["type"] for item in q2.events_after(0)] == ["test", "session.ended"]
    assert other.closed is False
    assert other.events_after(0) == []
    assert reg.attached_count("alice") == 0


# -- QueueRegistry: sweep -----------------------------------------------------


def test_sweep_expires_detached_queue_only_after_grace() -> None:
    clock = FakeClock()
    reg = QueueRegistry(grace_secs=120.0, clock=clock)
    q = reg.create("alice", "s")
    token = reg.attach(q)
    clock.now += 500.0
    assert reg.sweep() == []  # attached: never expires
    reg.detach(q, token)
    assert q.detached_since == clock.now
    clock.now += 119.0
    assert reg.sweep() == []
    assert reg.get(q.queue_id) is q
    clock.now += 2.0
    assert reg.sweep() == [q]
    assert reg.get(q.queue_id) is None
    assert q.closed is True
    assert reg.queues_of_user("alice") == []
    assert len(reg) == 0


def test_sweep_expires_a_queue_that_was_never_attached() -> None:
    clock = FakeClock()
    reg = QueueRegistry(grace_secs=10.0, clock=clock)
    q = reg.create("alice", "s")
    clock.now += 9.0
    assert reg.sweep() == []
    clock.now += 2.0
    assert reg.sweep() == [q]


def test_reattach_resets_expiry() -> None:
    clock = FakeClock()
    reg = QueueRegistry(grace_secs=10.0, clock=clock)
    q = reg.create("alice", "s")
    clock.now += 9.0
    token = reg.attach(q)
    assert q.detached_since is None
    clock.now += 5.0
    reg.detach(q, token)
    clock.now += 9.0
    assert reg.sweep() == []
    clock.now += 2.0
    assert reg.sweep() == [q]


def test_sweep_removes_drained_closed_queues_and_keeps_unread_ones_until_grace() -> None:
    clock = FakeClock()
    reg = QueueRegistry(grace_secs=10.0, clock=clock)
    drained, unread, live = (reg.create("alice", "s") for _ in range(3))
    reg.attach(live)
    drained.close()
    unread.push({"type": "session.ended"})
    unread.close()
    assert reg.sweep() == [drained]
    clock.now += 11.0
    assert reg.sweep() == [unread]
    assert reg.get(live.queue_id) is live


# -- QueueRegistry: attachment listener ---------------------------------------


def test_listener_sees_first_attach_and_last_detach_with_two_tabs() -> None:
    listener = RecordingListener()
    reg = QueueRegistry(listener=listener)
    tab1, tab2 = reg.create("alice", "s"), reg.create("alice", "s")
    t1 = reg.attach(tab1)
    t2 = reg.attach(tab2)
    assert listener.calls == [("attached", "alice")]
    assert reg.attached_count("alice") == 2
    reg.detach(tab1, t1)
    assert listener.calls == [("attached", "alice")]
    assert reg.attached_count("alice") == 1
    reg.detach(tab1, t1)  # twice: no double count
    assert reg.attached_count("alice") == 1
    reg.detach(tab2, t2)
    assert listener.calls == [("attached", "alice"), ("detached", "alice")]
    assert reg.attached_count("alice") == 0


def test_transport_switch_is_not_a_detach() -> None:
    listener = RecordingListener()
    reg = QueueRegistry()
    reg.set_listener(listener)
    q = reg.create("alice", "s")
    ws = reg.attach(q)
    poll = reg.attach(q)  # takes over the same queue
    reg.detach(q, ws)  # the old WebSocket finally closes: must not count
    assert reg.attached_count("alice") == 1
    assert listener.calls == [("attached", "alice")]
    reg.detach(q, poll)
    assert listener.calls == [("attached", "alice"), ("detached", "alice")]


def test_closing_or_sweeping_an_attached_queue_counts_as_detach() -> None:
    clock = FakeClock()
    listener = RecordingListener()
    reg = QueueRegistry(max_events=1, clock=clock, listener=listener)
    a, b = reg.create("alice", "s"), reg.create("bob", "t")
    ta = reg.attach(a)
    reg.attach(b)
    a.close()
    assert listener.calls == [("attached", "alice"), ("attached", "bob"), ("detached", "alice")]
    reg.detach(a, ta)  # the transport notices later: no second detach
    assert listener.calls.count(("detached", "alice")) == 1
    b.push(ev(1))
    b.push(ev(2))  # overflow closes it
    assert b.overflowed is True
    assert listener.calls[-1] == ("detached", "bob")
    assert reg.attached_count("bob") == 0
    assert set(reg.sweep()) == {a, b}
    assert len(listener.calls) == 4


def test_failing_listener_does_not_break_attach(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def on_user_attached(self, user_id: str) -> None:
            raise RuntimeError("boom")

        def on_user_detached(self, user_id: str) -> None:
            raise RuntimeError("boom")

    reg = QueueRegistry(listener=Broken())
    q = reg.create("alice", "s")
    token = reg.attach(q)
    assert q.is_current(token) is True
    reg.detach(q, token)
    assert q.attached is False
    assert reg.attached_count("alice") == 0
    assert "attach listener failed" in caplog.text
