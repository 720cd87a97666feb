"""The profile summarizer (bench/profsummary.py): self and cumulative shares from py-spy's
collapsed stacks. No server, no py-spy: the stacks are written here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profsummary import main, parse_stacks, source_file, summarize

# Root first, as py-spy writes them; the event loop's frames under everything.
LOOP = "run_forever (asyncio/base_events.py:608);_run_once (asyncio/base_events.py:1922)"
RAW = [
    f"{LOOP};send (chat/messages.py:120);insert (pymongo/collection.py:10) 6\n",
    f"{LOOP};send (chat/messages.py:131);encode (bson/__init__.py:5) 2\n",
    f"{LOOP};write (tornado/websocket.py:40) 2\n",
    "\n",
    "a line that is not a stack\n",
]


def test_stacks_are_counted_with_line_numbers_dropped() -> None:
    stacks = parse_stacks(RAW)
    assert sum(stacks.values()) == 10
    assert (
        stacks[
            (
                "run_forever (asyncio/base_events.py)",
                "_run_once (asyncio/base_events.py)",
                "send (chat/messages.py)",
                "insert (pymongo/collection.py)",
            )
        ]
        == 6
    )
    kept = parse_stacks(RAW, keep_lines=True)
    assert any("send (chat/messages.py:131)" in stack for stack in kept)


def test_self_cumulative_and_file_shares() -> None:
    summary = summarize(parse_stacks(RAW), top=3)
    assert summary.samples == 10
    assert summary.self_frames == [
        ("insert (pymongo/collection.py)", 6),
        ("encode (bson/__init__.py)", 2),
        ("write (tornado/websocket.py)", 2),
    ]
    # send is in 8 of the 10 samples, though it is on top of none; the loop's frames are hidden.
    assert summary.cumulative[0] == ("send (chat/messages.py)", 8)
    assert not any("base_events" in frame for frame, _ in summary.cumulative)
    assert summary.files[0] == ("pymongo/collection.py", 6)


def test_a_recursive_frame_counts_once_per_sample() -> None:
    stacks = parse_stacks(["f (x.py:1);f (x.py:2);f (x.py:3) 4\n"])
    assert summarize(stacks).cumulative == [("f (x.py)", 4)]


def test_hiding_nothing_shows_the_event_loop() -> None:
    summary = summarize(parse_stacks(RAW), hide="")
    assert summary.cumulative[0] == ("run_forever (asyncio/base_events.py)", 10)


def test_the_file_of_a_frame() -> None:
    assert source_file("send (chat/messages.py:120)") == "chat/messages.py"
    assert source_file("send (chat/messages.py)") == "chat/messages.py"
    assert source_file("<module> (<frozen site>:616)") == "<frozen site>"


def test_the_command_prints_each_profile_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("chat-ws-pairs-300", "chat-ws-pairs-50", "bare-fanout"):
        (tmp_path / f"{name}.txt").write_text("".join(RAW))
    assert main([str(tmp_path), "--only", "chat-ws-*", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "bare-fanout" not in out
    assert out.index("chat-ws-pairs-50 (10 samples)") < out.index("chat-ws-pairs-300")
    assert "| `insert (pymongo/collection.py)` | 60.0 % |" in out
    assert main([str(tmp_path), "--only", "nothing"]) == 1
