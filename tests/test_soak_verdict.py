"""The soak test's verdict (bench/soak.py): the checks must catch a loss, a duplicate, a
reordering and an error in the server's log, and pass a clean run. No server, no database."""

from __future__ import annotations

from pathlib import Path

from bench.common import ChildServer
from bench.soak import blocks_returned, check_deliveries, memory_returned

MIB = 2**20
MEMBERS = {"dm": ["alice", "bob"], "group": ["alice", "bob", "carol"]}
ACKED = [("dm", 1), ("dm", 2), ("group", 1), ("group", 3)]  # group seq 2 failed: a gap


def clean() -> dict[str, dict[str, list[int]]]:
    return {
        "alice": {"dm": [1, 2], "group": [1, 3]},
        "bob": {"dm": [1, 2], "group": [1, 3]},
        "carol": {"group": [1, 3]},
    }


def test_a_clean_run_passes_and_counts_every_delivery() -> None:
    verdict = check_deliveries(MEMBERS, ACKED, clean())
    assert verdict.ok
    assert verdict.messages == 4
    assert verdict.deliveries == 2 * 2 + 2 * 3


def test_a_message_missing_at_one_member_is_a_loss() -> None:
    received = clean()
    received["carol"]["group"] = [1]
    verdict = check_deliveries(MEMBERS, ACKED, received)
    assert not verdict.ok
    assert verdict.losses == ["carol never got seq 3 of group"]
    assert not verdict.duplicates and not verdict.reorders


def test_a_member_that_got_nothing_loses_everything() -> None:
    received = clean()
    del received["carol"]
    verdict = check_deliveries(MEMBERS, ACKED, received)
    assert len(verdict.losses) == 2


def test_a_message_delivered_twice_is_a_duplicate_not_a_reordering() -> None:
    received = clean()
    received["bob"]["dm"] = [1, 2, 2]
    verdict = check_deliveries(MEMBERS, ACKED, received)
    assert verdict.duplicates == ["bob got seq 2 of dm 2 times"]
    assert not verdict.reorders and not verdict.losses


def test_seqs_out_of_order_are_a_reordering() -> None:
    received = clean()
    received["alice"]["group"] = [3, 1]
    verdict = check_deliveries(MEMBERS, ACKED, received)
    assert verdict.reorders == ["alice got seq 1 of group after seq 3"]
    assert not verdict.duplicates and not verdict.losses


def test_unacknowledged_messages_are_only_checked_for_order() -> None:
    # Seq 2 of the group was stored but its sender never saw the answer: nobody has to have
    # it, but whoever got it must have got it in order.
    received = clean()
    received["bob"]["group"] = [1, 2, 3]
    assert check_deliveries(MEMBERS, ACKED, received).ok
    received["bob"]["group"] = [1, 3, 2]
    assert check_deliveries(MEMBERS, ACKED, received).reorders


def test_memory_must_come_back_near_its_start() -> None:
    assert memory_returned(start=100 * MIB, peak=300 * MIB, end=140 * MIB)  # within 25 % of 200
    assert not memory_returned(start=100 * MIB, peak=300 * MIB, end=160 * MIB)
    assert memory_returned(start=100 * MIB, peak=105 * MIB, end=115 * MIB)  # within 16 MiB
    assert not memory_returned(start=100 * MIB, peak=120 * MIB, end=120 * MIB)


def test_live_objects_must_come_back_near_their_start() -> None:
    assert blocks_returned(start=180_000, end=189_000)
    assert blocks_returned(start=180_000, end=170_000)  # fewer is fine
    assert not blocks_returned(start=180_000, end=211_000)  # one block per message of a round


def test_errors_in_the_server_log_are_found_with_their_exception(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "2026-11-21 03:16:31,000 INFO chat.server: listening\n"
        "2026-11-21 03:16:31,569 ERROR asyncio: Task exception was never retrieved\n"
        "future: <Task finished>\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise WebSocketClosedError()\n"
        "tornado.websocket.WebSocketClosedError\n"
        "2026-11-21 03:16:32,000 ERROR chat.presence: plain message\n"
        "2026-11-21 03:16:33,000 INFO tornado.access: 200 GET /healthz\n"
    )
    server = ChildServer.__new__(ChildServer)  # no process: only its log is read
    server.log = log
    assert server.logged_errors() == [
        "2026-11-21 03:16:31,569 ERROR asyncio: Task exception was never retrieved"
        " | tornado.websocket.WebSocketClosedError",
        "2026-11-21 03:16:32,000 ERROR chat.presence: plain message",
    ]
