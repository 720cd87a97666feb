"""The event-loop stall finder (bench/stalls.py): the long turns of the loop in py-spy's
chrometrace timeline, and what ran in them. No server, no py-spy: the timeline is written here,
as py-spy writes it (a B event when a frame appears in a sample, an E when it has gone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stalls import long_turns, main, segments

MAIN, OTHER = 1, 2
LOOP = [
    ("BaseEventLoop.run_forever", "/usr/lib/python3.11/asyncio/base_events.py"),
    ("BaseEventLoop._run_once", "/usr/lib/python3.11/asyncio/base_events.py"),
]
TURN = ("Handle._run", "/usr/lib/python3.11/asyncio/events.py")
IDLE = ("EpollSelector.select", "/usr/lib/python3.11/selectors.py")


class Timeline:
    """Samples 5 ms apart (py-spy at 200 Hz), each a stack under the loop's frames."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stacks: dict[int, list[tuple[str, str]]] = {MAIN: [], OTHER: []}
        self.ts = 0

    def sample(self, *frames: tuple[str, str], tid: int = MAIN, ms: int = 5) -> None:
        stack = [*LOOP, *frames]
        old = self.stacks[tid]
        common = 0
        while common < min(len(old), len(stack)) and old[common] == stack[common]:
            common += 1
        for name, filename in reversed(old[common:]):
            self.events.append(self._event("E", name, filename, tid))
        for name, filename in stack[common:]:
            self.events.append(self._event("B", name, filename, tid))
        self.stacks[tid] = stack
        self.ts += ms * 1000

    def _event(self, ph: str, name: str, filename: str, tid: int) -> dict[str, Any]:
        args = {"filename": filename, "line": 1}
        return {"name": name, "ph": ph, "ts": self.ts, "pid": 9, "tid": tid, "args": args}


SEND = ("ChatSocket._run_frame", "/work/main/handlers/socket.py")
TOUCH = ("SessionStore.touch", "/work/main/chat/store/accounts.py")
WRITE = ("_SelectorSocketTransport.write", "/usr/lib/python3.11/asyncio/selector_events.py")


def timeline() -> Timeline:
    t = Timeline()
    for _ in range(3):  # quick turns, with the loop idle between them
        t.sample(TURN, SEND)
        t.sample(IDLE)
    for _ in range(8):  # one turn of 40 ms: mostly a database write
        t.sample(TURN, SEND, TOUCH, WRITE)
    t.sample(TURN, SEND)
    t.sample(IDLE)
    for _ in range(20):  # another thread, busy all along: not the loop
        t.sample(TURN, SEND, tid=OTHER, ms=0)
    t.sample(IDLE)
    return t


def test_a_long_turn_is_found_with_its_length_and_what_filled_it() -> None:
    segs = segments(timeline().events)
    turns, length = long_turns(segs, over_ms=20)
    assert [turn.ms for turn in turns] == [45.0]  # 9 samples, on the main thread only
    assert length == 75.0  # to the last change of the stack (the idle at the end is one)
    short, _ = long_turns(segs, over_ms=5)
    assert [turn.ms for turn in short] == [5.0, 5.0, 5.0, 45.0]


def test_the_command_prints_the_turn_and_its_frames(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "chat-ws-pairs-50.json").write_text(json.dumps(timeline().events))
    assert main([str(tmp_path), "--over", "20"]) == 0
    out = capsys.readouterr().out
    assert "### chat-ws-pairs-50" in out
    assert "1 turns of the event loop of 20 ms or more, 45 ms in all" in out
    # The frames on the stack for most of the turn, to the deepest; then the shares.
    assert (
        "| 45 | 0.0 | `ChatSocket._run_frame (handlers/socket.py)` → `SessionStore.touch "
        "(store/accounts.py)` → `_SelectorSocketTransport.write (asyncio/selector_events.py)` |"
    ) in out
    assert "| `SessionStore.touch (store/accounts.py)` | 88.9 % |" in out
    assert main([str(tmp_path), "--only", "nothing-*"]) == 1
