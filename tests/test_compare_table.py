"""bench/compare.py's options and table, and the closed-loop sender of its row (d). No server:
the results are written here."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.compare import build_table, parse_args, render_table
from bench.loadgen import closed_loop


def group_result(small: float, large: float) -> dict[str, Any]:
    def size(members: int, per_sec: float) -> dict[str, Any]:
        return {
            "members": members,
            "per_sec": per_sec,
            "p50_ms": 10.0,
            "p99_ms": 20.0,
            "generator_cpu_pct": [3, 4],
        }

    return {"members_2": size(2, small), "members_1000": size(1000, large), "ratio": large / small}


def test_workloads_are_chosen_in_their_own_order_and_checked() -> None:
    assert parse_args(["--workloads", "group,connect"]).workloads == ["connect", "group"]
    assert parse_args([]).workloads == ["connect", "fanout", "one2one", "group"]
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "fanout,everything"])


def test_quick_halves_the_group_rounds() -> None:
    assert parse_args([]).group_secs == 10
    assert parse_args(["--quick"]).group_secs == 5
    assert parse_args(["--quick", "--group-secs", "3"]).group_secs == 3


def test_row_d_is_this_servers_and_the_peers_show_a_dash() -> None:
    results = {
        "chat-ws": {"groups": group_result(400.0, 20.0), "connect": {"rate_per_sec": 300.0}},
        "bare": {"connect": {"rate_per_sec": 3000.0}},
    }
    table = render_table(build_table(results), ["chat-ws", "bare"])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    ratio = rows["(d) 1,000-member / 2-member rate ↑"]
    assert [cell.strip() for cell in ratio.split("|")[2:-1]] == ["ratio", "0.05", "-", "-"]
    assert [c.strip() for c in rows["(d) sends to a 2-member group ↑"].split("|")[3:5]] == [
        "400",
        "-",
    ]
    assert "0.10x" in rows["(a) connect rate ↑"]  # the ratio columns stay as they were


def test_rows_of_a_workload_that_did_not_run_are_left_out() -> None:
    table = render_table(
        build_table({"chat-ws": {"groups": group_result(100.0, 90.0)}}), ["chat-ws"]
    )
    assert "(d) 1,000-member / 2-member rate" in table
    assert "fan-out" not in table and "connect rate" not in table


async def test_a_closed_loop_counts_refusals_and_stops_on_a_lost_connection() -> None:
    replies: list[float | None] = [0.01, None, 0.02]

    async def send() -> float | None:
        if not replies:
            raise ConnectionError("closed")
        return replies.pop(0)

    loop = await closed_loop(send, until=time.perf_counter() + 60)
    assert loop.latencies == [0.01, 0.02]
    assert loop.errors == 2  # the refusal, and the send that found the connection gone
    assert loop.stopped_by == "ConnectionError"


def test_the_two_process_rows_get_their_ratio_column() -> None:
    results = {
        "chat-ws-2p": {"connect": {"rate_per_sec": 600.0}, "fanout": {"p99_ms": 30.0}},
        "socketio-redis": {"connect": {"rate_per_sec": 400.0}, "fanout": {"p99_ms": 60.0}},
    }
    assert parse_args(["--servers", "chat-ws-2p,socketio-redis"]).servers == list(results)
    table = render_table(build_table(results), list(results))
    assert "chat-ws-2p/socketio-redis" in table.splitlines()[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert rows["(a) connect rate ↑"].split("|")[-2].strip() == "1.50x"
    assert rows["(b) fan-out latency p99 ↓"].split("|")[-2].strip() == "0.50x"
