"""Tests for chat.presence: online/offline transitions, grace, audience, subscribers, blocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chat.events import EventQueue, QueueRegistry
from chat.presence import MAX_SUBSCRIPTIONS_PER_QUEUE, InMemoryPresence

GRACE = 0.05

Setup = tuple[QueueRegistry, InMemoryPresence]


class World:
    """Fake social graph and database the presence callbacks read and write."""

    def __init__(self) -> None:
        self.audiences: dict[str, set[str]] = {}
        self.blocked: set[frozenset[str]] = set()
        self.stored: list[tuple[str, datetime]] = []
        self.fail_store = False
        self.fail_audience = False

    async def audience(self, user_id: str) -> set[str]:
        await asyncio.sleep(0)  # a real query yields to the loop
        if self.fail_audience:
            raise RuntimeError("database down")
        return set(self.audiences.get(user_id, set()))

    async def is_blocked_between(self, a: str, b: str) -> bool:
        await asyncio.sleep(0)
        return frozenset((a, b)) in self.blocked

    async def store_last_seen(self, user_id: str, moment: datetime) -> None:
        await asyncio.sleep(0)
        if self.fail_store:
            raise RuntimeError("database down")
        self.stored.append((user_id, moment))


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def setup(world: World) -> AsyncIterator[Setup]:
    registry = QueueRegistry()
    presence = InMemoryPresence(
        registry,
        audience=world.audience,
        is_blocked_between=world.is_blocked_between,
        store_last_seen=world.store_last_seen,
        grace_secs=GRACE,
    )
    yield registry, presence
    presence.close()
    await asyncio.sleep(0)  # let cancelled tasks finish before the loop closes


def presence_events(queue: EventQueue) -> list[dict[str, Any]]:
    """Every presence event the queue holds (not acknowledged)."""
    return [item["event"] for item in queue.events_after(0) if item["event"]["type"] == "presence"]


def statuses_seen(queue: EventQueue, user_id: str) -> list[str]:
    return [e["status"] for e in presence_events(queue) if e["user_id"] == user_id]


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll until condition holds; fails after a second (far beyond any grace used here)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached within a second")


async def test_online_is_announced_once_and_second_tab_keeps_user_online(
    world: World, setup: Setup
) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab1, tab2 = registry.create("alice", "sa"), registry.create("alice", "sa")
    t1 = registry.attach(tab1)
    registry.attach(tab2)
    assert presence.is_online("alice") is True
    await eventually(lambda: len(presence_events(bob)) == 1)
    assert presence_events(bob) == [
        {"type": "presence", "user_id": "alice", "status": "online", "last_seen": None}
    ]
    registry.detach(tab1, t1)
    await asyncio.sleep(GRACE * 3)
    assert presence.is_online("alice") is True
    assert statuses_seen(bob, "alice") == ["online"]
    assert world.stored == []
    assert presence.last_seen("alice") is None


async def test_closing_every_tab_goes_offline_after_grace(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab1, tab2 = registry.create("alice", "sa"), registry.create("alice", "sa")
    t1, t2 = registry.attach(tab1), registry.attach(tab2)
    registry.detach(tab1, t1)
    registry.detach(tab2, t2)
    before = datetime.now(UTC)
    # Still online during the grace: a reload must not flap.
    assert presence.is_online("alice") is True
    assert presence.statuses(["alice", "carol"]) == {"alice": "online", "carol": "offline"}
    await eventually(lambda: statuses_seen(bob, "alice") == ["online", "offline"])
    assert presence.is_online("alice") is False
    assert presence.statuses(["alice"]) == {"alice": "offline"}
    assert len(world.stored) == 1
    user_id, stored_at = world.stored[0]
    assert user_id == "alice"
    assert stored_at.tzinfo is not None
    assert stored_at.utcoffset() == timedelta(0)
    assert before <= stored_at <= datetime.now(UTC)
    assert presence.last_seen("alice") == stored_at
    offline = presence_events(bob)[-1]
    millis = stored_at.microsecond // 1000
    assert offline == {
        "type": "presence",
        "user_id": "alice",
        "status": "offline",
        "last_seen": stored_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z",
    }


async def test_offline_waits_for_the_grace(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab = registry.create("alice", "sa")
    registry.detach(tab, registry.attach(tab))
    await asyncio.sleep(GRACE / 3)
    assert presence.is_online("alice") is True
    assert statuses_seen(bob, "alice") == ["online"]
    await eventually(lambda: statuses_seen(bob, "alice") == ["online", "offline"])


async def test_reattach_within_grace_publishes_nothing(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab = registry.create("alice", "sa")
    token = registry.attach(tab)
    await eventually(lambda: statuses_seen(bob, "alice") == ["online"])
    registry.detach(tab, token)  # page reload ...
    await asyncio.sleep(GRACE / 3)
    reloaded, resumed = registry.resume("alice", "sa", tab.queue_id, registry.epoch, 0)
    assert resumed is True
    registry.attach(reloaded)  # ... back within the grace
    await asyncio.sleep(GRACE * 3)
    assert statuses_seen(bob, "alice") == ["online"]
    assert presence.is_online("alice") is True
    assert world.stored == []


async def test_back_online_after_offline_is_announced_in_order(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab = registry.create("alice", "sa")
    registry.detach(tab, registry.attach(tab))
    await eventually(lambda: statuses_seen(bob, "alice") == ["online", "offline"])
    registry.attach(tab)
    assert presence.last_seen("alice") is None
    await eventually(lambda: statuses_seen(bob, "alice") == ["online", "offline", "online"])


async def test_subscriber_receives_presence_once(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    carol = registry.create("carol", "sc")  # not in the audience
    bob = registry.create("bob", "sb")  # in the audience and subscribed
    assert presence.subscribe(carol.queue_id, ["alice", "alice"]) == ["alice"]
    assert presence.subscribe(bob.queue_id, ["alice"]) == ["alice"]
    tab = registry.create("alice", "sa")
    registry.detach(tab, registry.attach(tab))
    await eventually(lambda: statuses_seen(carol, "alice") == ["online", "offline"])
    assert statuses_seen(bob, "alice") == ["online", "offline"]  # not duplicated


async def test_blocked_subscriber_gets_nothing(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.blocked.add(frozenset(("alice", "dave")))
    dave = registry.create("dave", "sd")
    carol = registry.create("carol", "sc")
    presence.subscribe(dave.queue_id, ["alice"])
    presence.subscribe(carol.queue_id, ["alice"])
    tab = registry.create("alice", "sa")
    registry.detach(tab, registry.attach(tab))
    await eventually(lambda: statuses_seen(carol, "alice") == ["online", "offline"])
    assert presence_events(dave) == []


async def test_unsubscribed_queue_gets_nothing(world: World, setup: Setup) -> None:
    registry, presence = setup
    carol = registry.create("carol", "sc")
    erin = registry.create("erin", "se")
    presence.subscribe(carol.queue_id, ["alice"])
    presence.subscribe(erin.queue_id, ["alice"])
    presence.unsubscribe_queue(carol.queue_id)
    registry.attach(registry.create("alice", "sa"))
    await eventually(lambda: statuses_seen(erin, "alice") == ["online"])
    assert presence_events(carol) == []


async def test_subscriptions_are_capped_per_queue(setup: Setup) -> None:
    registry, presence = setup
    q = registry.create("carol", "sc")
    wanted = [f"user{n}" for n in range(MAX_SUBSCRIPTIONS_PER_QUEUE + 5)]
    accepted = presence.subscribe(q.queue_id, wanted)
    assert accepted == wanted[:MAX_SUBSCRIPTIONS_PER_QUEUE]
    assert presence.subscribe(q.queue_id, ["user0", "extra"]) == ["user0"]
    assert presence.subscribe("no-such-queue", ["alice"]) == []


async def test_failing_last_seen_store_still_publishes_offline(
    world: World, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    world.fail_store = True
    bob = registry.create("bob", "sb")
    tab = registry.create("alice", "sa")
    registry.detach(tab, registry.attach(tab))
    await eventually(lambda: statuses_seen(bob, "alice") == ["online", "offline"])
    assert world.stored == []
    assert presence_events(bob)[-1]["last_seen"] is not None
    assert "storing last_seen failed for user alice" in caplog.text
    assert presence.is_online("alice") is False


async def test_failing_audience_still_reaches_subscribers(
    world: World, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    world.fail_audience = True
    bob = registry.create("bob", "sb")
    carol = registry.create("carol", "sc")
    presence.subscribe(carol.queue_id, ["alice"])
    registry.attach(registry.create("alice", "sa"))
    await eventually(lambda: statuses_seen(carol, "alice") == ["online"])
    assert presence_events(bob) == []
    assert "computing the presence audience failed" in caplog.text


async def test_close_cancels_the_pending_offline(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    tab = registry.create("alice", "sa")
    token = registry.attach(tab)
    await eventually(lambda: statuses_seen(bob, "alice") == ["online"])
    registry.detach(tab, token)
    presence.close()
    await asyncio.sleep(GRACE * 3)
    assert statuses_seen(bob, "alice") == ["online"]
    assert world.stored == []


async def test_close_cancels_announcements_in_flight(world: World, setup: Setup) -> None:
    registry, presence = setup
    world.audiences["alice"] = {"bob"}
    bob = registry.create("bob", "sb")
    registry.attach(registry.create("alice", "sa"))
    presence.close()  # before the audience query could finish
    await asyncio.sleep(GRACE)
    assert presence_events(bob) == []
