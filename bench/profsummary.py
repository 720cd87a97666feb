"""Summarize the py-spy stacks of `python -m bench.compare --profile DIR`.

    .venv/bin/python -m bench.profsummary DIR                  # every workload in DIR
    .venv/bin/python -m bench.profsummary DIR --only 'chat-ws-*' --top 10

For each file (one per server and workload: `chat-ws-fanout.txt`, `chat-lp-pairs-200.txt`,
`chat-ws-group-1000.txt`, ...) it prints, as Markdown, the frames with the largest share of
the samples: *self* (the frame on top of the stack: where the CPU was) and *cumulative* (the
frame anywhere in the stack: what it and what it called cost), and the self share by source
file. py-spy samples only a running thread, so the shares are of the server's CPU time.

Frames are "function (file)" with line numbers dropped, so that a function counts once
(--lines keeps them). The event loop's own frames, under which everything runs, are left
out of the cumulative list (--hide '' shows them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import fnmatch
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

# The frames every sample of an asyncio server passes through: 100 % cumulative, no news.
EVENT_LOOP_FRAMES = r"\((asyncio/(base_events|events|runners)|server)\.py\)$"
LINE_NUMBER = re.compile(r":\d+\)$")

Stacks = collections.Counter[tuple[str, ...]]


def parse_stacks(lines: Iterable[str], keep_lines: bool = False) -> Stacks:
    """py-spy's raw (collapsed) format, "frame;frame;... count" per line, root first: the
    sample count of each stack (frames as "function (file)" unless keep_lines)."""
    stacks: Stacks = collections.Counter()
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue  # a blank or foreign line
        frames = stack.split(";")
        if not keep_lines:
            frames = [LINE_NUMBER.sub(")", frame) for frame in frames]
        stacks[tuple(frames)] += int(count)
    return stacks


@dataclasses.dataclass
class Summary:
    """The top frames of one profile, as (frame, samples), largest first."""

    samples: int
    self_frames: list[tuple[str, int]]
    cumulative: list[tuple[str, int]]
    files: list[tuple[str, int]]  # self samples by source file


def source_file(frame: str) -> str:
    """The file of a "function (file)" or "function (file:line)" frame."""
    return re.sub(r":\d+$", "", frame.rpartition(" (")[2].removesuffix(")"))


def summarize(stacks: Stacks, top: int = 15, hide: str = EVENT_LOOP_FRAMES) -> Summary:
    """The `top` frames by self and by cumulative samples (a frame counted once per sample
    however often it recurs in it), leaving frames matching `hide` out of the cumulative."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    hidden = re.compile(hide) if hide else None
    for frames, count in stacks.items():
        own[frames[-1]] += count
        files[source_file(frames[-1])] += count
        for frame in dict.fromkeys(frames):  # once per sample, ties in stack order
            if hidden is None or not hidden.search(frame):
                anywhere[frame] += count
    return Summary(
        sum(stacks.values()),
        own.most_common(top),
        anywhere.most_common(top),
        files.most_common(top),
    )


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f} %" if total else "-"


def render(name: str, summary: Summary) -> str:
    """One profile's summary as Markdown: a heading and three tables."""
    out = [f"### {name} ({summary.samples:,} samples)", ""]
    if not summary.samples:
        return "\n".join([*out, "No samples.", ""])
    for title, rows in (
        ("self", summary.self_frames),
        ("cumulative", summary.cumulative),
        ("self, by file", summary.files),
    ):
        out += [f"| {title} | share |", "|---|---:|"]
        out += [f"| `{frame}` | {_share(count, summary.samples)} |" for frame, count in rows]
        out.append("")
    return "\n".join(out)


def natural_key(path: Path) -> list[object]:
    """chat-ws-pairs-50 before chat-ws-pairs-300."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profsummary",
        description="Top frames (self, cumulative, by file) of each py-spy profile that "
        "`bench.compare --profile DIR` wrote.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=15, help="frames per list (%(default)s)")
    parser.add_argument("--only", default="*", help="profiles whose name matches this glob")
    parser.add_argument("--lines", action="store_true", help="keep line numbers in frames")
    parser.add_argument(
        "--hide",
        default=EVENT_LOOP_FRAMES,
        help="regex of frames left out of the cumulative list (default: the event loop's)",
    )
    args = parser.parse_args(argv)
    paths = sorted(
        (p for p in args.directory.glob("*.txt") if fnmatch.fnmatch(p.stem, args.only)),
        key=natural_key,
    )
    if not paths:
        print(f"no profiles (*.txt) matching {args.only!r} in {args.directory}", file=sys.stderr)
        return 1
    for path in paths:
        with path.open(errors="replace") as lines:
            stacks = parse_stacks(lines, keep_lines=args.lines)
        print(render(path.stem, summarize(stacks, args.top, args.hide)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
