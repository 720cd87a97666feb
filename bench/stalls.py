"""The longest turns of the event loop in `python -m bench.compare --profile DIR
--profile-timeline`, and what ran in them.

    .venv/bin/python -m bench.stalls DIR                       # every .json file in DIR
    .venv/bin/python -m bench.stalls DIR --only 'chat-ws-pairs-*' --over 30 --top 10

A message's p99 is set by what it waits behind: one callback of the event loop that runs for
100 ms delays every frame, reply and event that arrives meanwhile, however cheap the rest of
the turn's work. A flame graph hides such a turn among thousands of quick ones; py-spy's
chrometrace format keeps each sample's time, so here the loop's turns are found as the
intervals of `Handle._run (asyncio/events.py)` on the main thread (sampled at py-spy's rate,
so lengths are multiples of its interval).

For each file it prints, as Markdown: how many turns lasted at least --over ms and their share
of the run; the --top longest, each with the deepest frames that were on the stack for most
of it; and, over every such turn, the frames on the stack for the largest share of their
time (cumulative) and on top of it (self).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TURN = "Handle._run (asyncio/events.py)"
Frame = str  # "function (file)"


@dataclasses.dataclass
class Segment:
    """The main thread's stack, unchanged from start to end (µs)."""

    start: int
    end: int
    stack: tuple[Frame, ...]


def _frame(event: dict[str, Any]) -> Frame:
    filename = str(event.get("args", {}).get("filename", "?"))
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "lib/python3":
                filename = filename.split("/", 1)[-1]
    if filename.startswith("/"):
        filename = filename.rsplit("/", 2)[-2] + "/" + filename.rsplit("/", 1)[-1]
    return f"{event.get('name', '?')} ({filename})"


def segments(events: list[dict[str, Any]]) -> list[Segment]:
    """The main thread's (the one that ran the most turns) stacks over time."""
    by_tid: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in events:
        if event.get("ph") in ("B", "E"):
            by_tid[int(event["tid"])].append(event)

    def turns(tid: int) -> int:
        return sum(1 for e in by_tid[tid] if e["ph"] == "B" and _frame(e) == TURN)

    if not by_tid:
        return []
    main = max(by_tid, key=turns)
    out: list[Segment] = []
    stack: list[Frame] = []
    last_ts: int | None = None
    for event in sorted(by_tid[main], key=lambda e: e["ts"]):  # stable: B/E order kept
        ts = int(event["ts"])
        if last_ts is not None and ts > last_ts:
            out.append(Segment(last_ts, ts, tuple(stack)))
        last_ts = ts
        if event["ph"] == "B":
            stack.append(_frame(event))
        elif stack:
            stack.pop()
    return out


@dataclasses.dataclass
class Turn:
    start: int
    end: int
    parts: list[Segment]

    @property
    def ms(self) -> float:
        return (self.end - self.start) / 1000


def long_turns(segs: list[Segment], over_ms: float) -> tuple[list[Turn], float]:
    """Every turn of at least over_ms, and the run's length in ms."""
    found: list[Turn] = []
    current: Turn | None = None
    for seg in segs:
        if TURN in seg.stack:
            if current is not None and current.end == seg.start:
                current.end = seg.end
                current.parts.append(seg)
                continue
            if current is not None and current.ms >= over_ms:
                found.append(current)
            current = Turn(seg.start, seg.end, [seg])
        else:
            if current is not None and current.ms >= over_ms:
                found.append(current)
            current = None
    if current is not None and current.ms >= over_ms:
        found.append(current)
    length = (segs[-1].end - segs[0].start) / 1000 if segs else 0.0
    return found, length


def _after_turn(stack: tuple[Frame, ...]) -> tuple[Frame, ...]:
    return stack[stack.index(TURN) + 1 :] if TURN in stack else stack


def dominant(turn: Turn, share: float = 0.5) -> list[Frame]:
    """The deepest chain of frames each on the stack for at least `share` of the turn."""
    chain: list[Frame] = []
    while True:
        time: collections.Counter[Frame] = collections.Counter()
        for part in turn.parts:
            rest = _after_turn(part.stack)
            if tuple(rest[: len(chain)]) == tuple(chain) and len(rest) > len(chain):
                time[rest[len(chain)]] += part.end - part.start
        if not time:
            return chain
        frame, spent = time.most_common(1)[0]
        if spent < share * (turn.end - turn.start):
            return chain
        chain.append(frame)


def summarize(path: Path, over_ms: float, top: int) -> str:
    segs = segments(json.loads(path.read_text()))
    turns, length = long_turns(segs, over_ms)
    total = sum(t.ms for t in turns)
    lines = [f"### {path.stem}", ""]
    if not segs:
        return "\n".join([*lines, "(no samples)", ""])
    lines.append(
        f"{len(turns)} turns of the event loop of {over_ms:g} ms or more, {total:,.0f} ms in all "
        f"({100 * total / length if length else 0:.1f} % of {length / 1000:,.1f} s)."
    )
    lines.append("")
    if not turns:
        return "\n".join(lines) + "\n"
    lines += ["| ms | at s | what ran most of it (outermost first, below the turn) |"]
    lines.append("|---:|---:|---|")
    start = segs[0].start
    for turn in sorted(turns, key=lambda t: -t.ms)[:top]:
        chain = dominant(turn)
        shown = " → ".join(f"`{f}`" for f in chain[-4:]) or "(various)"
        lines.append(f"| {turn.ms:,.0f} | {(turn.start - start) / 1e6:,.1f} | {shown} |")
    cumulative: collections.Counter[Frame] = collections.Counter()
    selfs: collections.Counter[Frame] = collections.Counter()
    for turn in turns:
        for part in turn.parts:
            spent = part.end - part.start
            rest = _after_turn(part.stack)
            for frame in set(rest):
                cumulative[frame] += spent
            if rest:
                selfs[rest[-1]] += spent
    for title, counts in (("cumulative", cumulative), ("self", selfs)):
        lines += ["", f"| {title}, in these turns | share |", "|---|---:|"]
        for frame, spent in counts.most_common(top):
            lines.append(f"| `{frame}` | {100 * spent / (total * 1000):.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stalls", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--only", default="*", help="file names (without .json) to match")
    parser.add_argument("--over", type=float, default=20.0, help="a long turn, ms (%(default)s)")
    parser.add_argument("--top", type=int, default=12, help="rows per table (%(default)s)")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.directory.glob("*.json") if fnmatch.fnmatch(p.stem, args.only))
    if not files:
        print(f"no .json timelines in {args.directory} match {args.only!r}", file=sys.stderr)
        return 1
    for path in files:
        print(summarize(path, args.over, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
