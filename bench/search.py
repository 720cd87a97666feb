"""User search and directory latency at scale, over HTTP against a server process.

Run:  .venv/bin/python -m bench.search            (100,000 users; --help for options)

Users are written with raw batched inserts (the same document shape the store writes, with
a constant password hash: signing up 100,000 users would mostly measure bcrypt), after the
server created its indexes. One searcher signs in with a session written through the store.
Then, one request at a time, GET /api/users is timed for:

- prefixes of 1, 2 and 3 characters and whole usernames, drawn from the stored names, typed
  in a random case (the search is case-insensitive);
- prefixes that match nobody;
- the first page of the directory (no q), and pages deep into it (`after` a stored name).

Each row reports p50 and p99 of the request latency and the mean number of users whose
name starts with the prefix (what the index range spans; the page holds at most --limit).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import tornado.escape
import tornado.httpclient
from bson import ObjectId

from bench.common import BENCH_SECRET, ServerProcess, database, percentile, print_table
from chat.auth import TokenCodec
from chat.store import Store
from chat.store.accounts import FRIEND_CODE_ALPHABET, FRIEND_CODE_LEN, prefix_upper_bound

INSERT_BATCH = 5000  # documents per insert_many
PHASE_BUDGET_SECS = 30.0  # a kind of query stops being sampled after this long
SEED = 20261120  # the same names on every run
# Name stems and words of the generated usernames; common stems make dense prefixes.
# fmt: off
STEMS = (
    "alex", "ali", "amy", "ana", "anna", "ben", "bob", "carl", "chen", "chris", "dan", "dana",
    "david", "eli", "emma", "eva", "fatima", "felix", "gina", "hana", "hugo", "ian", "igor",
    "ivan", "jack", "james", "jan", "jin", "john", "jose", "julia", "kai", "kate", "kim", "lara",
    "lea", "leo", "li", "lin", "liam", "lucas", "luis", "maria", "mark", "max", "mei", "mia",
    "mike", "nina", "noah", "olga", "omar", "paul", "pedro", "raj", "rosa", "ruby", "sam", "sara",
    "sofia", "tom", "uma", "victor", "wei", "xavier", "yara", "yuki", "zoe"
)
WORDS = (
    "the", "real", "dev", "cat", "fox", "sun", "moon", "star", "rock", "blue", "red", "green",
    "wolf", "bear", "owl"
)
# fmt: on


def friend_code(i: int) -> str:
    """A unique code for user i (the store draws random ones; uniqueness is what matters)."""
    base = len(FRIEND_CODE_ALPHABET)
    digits = []
    for _ in range(FRIEND_CODE_LEN):
        i, digit = divmod(i, base)
        digits.append(FRIEND_CODE_ALPHABET[digit])
    return "".join(digits)


def usernames(count: int, rng: random.Random) -> list[str]:
    """count distinct usernames shaped like real ones: name stems, words, separators, digits,
    some capitalized; common stems make some prefixes much denser than others."""
    seen: set[str] = set()
    names: list[str] = []
    while len(names) < count:
        stem = rng.choice(STEMS)
        shape = rng.random()
        if shape < 0.4:
            name = f"{stem}{rng.randrange(10_000)}"
        elif shape < 0.6:
            name = f"{stem}{rng.choice('._-')}{rng.choice(WORDS)}{rng.randrange(100)}"
        elif shape < 0.8:
            name = f"{rng.choice(WORDS)}{stem}{rng.randrange(1000)}"
        else:
            name = f"{stem}_{rng.choice(STEMS)}{rng.randrange(100)}"
        if rng.random() < 0.3:
            name = name.capitalize()
        name = name[:32]
        if name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names


async def seed(uri: str, db_name: str, names: list[str]) -> tuple[str, float]:
    """Insert the users in batches; a token for one more user (the searcher); seconds taken."""
    store = Store(uri, db_name, timeout_ms=30_000)
    users = store.db["users"]
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        for start in range(0, len(names), INSERT_BATCH):
            batch = [
                {
                    "_id": ObjectId(),
                    "username": name,
                    "username_lower": name.lower(),
                    "email": f"{name}@bench.example",
                    "email_lower": f"{name.lower()}@bench.example",
                    "password_hash": "$2b$12$" + "x" * 53,  # matches no password
                    "friend_code": friend_code(start + i),
                    "created_at": now,
                    "last_seen": None,
                }
                for i, name in enumerate(names[start : start + INSERT_BATCH])
            ]
            await users.insert_many(batch, ordered=False)
        seconds = time.perf_counter() - started
        searcher = await store.users.create(
            f"searcher{uuid.uuid4().hex[:8]}", "searcher@bench.example", "$2b$12$" + "y" * 53
        )
        codec = TokenCodec(BENCH_SECRET, 24 * 3600)
        expires_at = codec.expiry()
        session = await store.sessions.create(searcher.id, expires_at)
        return codec.issue(searcher.id, session.id, expires_at), seconds
    finally:
        await store.close()


def matches(sorted_lower: list[str], prefix: str) -> int:
    """How many stored names start with prefix (the index range the query spans)."""
    lo = bisect.bisect_left(sorted_lower, prefix)
    upper = prefix_upper_bound(prefix)
    hi = len(sorted_lower) if upper is None else bisect.bisect_left(sorted_lower, upper)
    return hi - lo


def random_case(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


class Searcher:
    """Times GET /api/users, one request at a time."""

    def __init__(self, base_url: str, token: str, limit: int) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.limit = limit
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    async def search(self, **query: str) -> tuple[float, dict[str, Any]]:
        url = f"{self.base_url}/api/users?" + urlencode({**query, "limit": self.limit})
        started = time.perf_counter()
        response = await self.http.fetch(url, headers=self.headers, request_timeout=120)
        elapsed = time.perf_counter() - started
        body: dict[str, Any] = tornado.escape.json_decode(response.body)
        return elapsed, body

    def close(self) -> None:
        self.http.close()


async def measure(
    searcher: Searcher, label: str, queries: list[dict[str, str]], spans: list[int]
) -> tuple[str, str]:
    """Run the queries in turn (within the phase budget); a row for the table."""
    timings: list[float] = []
    deadline = time.perf_counter() + PHASE_BUDGET_SECS
    for query in queries:
        elapsed, body = await searcher.search(**query)
        assert len(body["users"]) <= searcher.limit
        timings.append(elapsed)
        if time.perf_counter() > deadline:
            break
    span = sum(spans[: len(timings)]) / max(1, len(timings))
    value = (
        f"p50 {percentile(timings, 50) * 1000:7.1f} ms  p99 {percentile(timings, 99) * 1000:7.1f}"
        f" ms  (n={len(timings)}, ~{span:,.0f} users in range)"
    )
    return label, value


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Seed users, start a server, time each kind of search; the table's rows."""
    rng = random.Random(SEED)
    names = usernames(args.users, rng)
    sorted_lower = sorted(n.lower() for n in names)
    rows: list[tuple[str, str]] = []
    with database(args.mongo_uri) as uri:
        db_name = f"bench_search_{uuid.uuid4().hex[:8]}"
        server = ServerProcess(uri, db_name)  # creates the indexes before the inserts
        searcher: Searcher | None = None
        try:
            token, seconds = await seed(uri, db_name, names)
            rows.append(("seed (raw inserts, indexed)", f"{len(names):,} users in {seconds:.1f} s"))
            searcher = Searcher(server.base_url, token, args.limit)
            for _ in range(5):  # warm up connections and caches
                await searcher.search(q="a")

            samples = rng.sample(names, min(args.queries, len(names)))
            for length, label in ((1, "q: 1 char"), (2, "q: 2 chars"), (3, "q: 3 chars")):
                prefixes = [n[:length].lower() for n in samples]
                queries = [{"q": random_case(p, rng)} for p in prefixes]
                spans = [matches(sorted_lower, p) for p in prefixes]
                rows.append(await measure(searcher, label, queries, spans))
            whole = [n.lower() for n in samples]
            rows.append(
                await measure(
                    searcher,
                    "q: whole username",
                    [{"q": random_case(n, rng)} for n in whole],
                    [matches(sorted_lower, n) for n in whole],
                )
            )
            misses = [f"{n.lower()}zz" for n in samples]
            rows.append(
                await measure(
                    searcher, "q: no match", [{"q": m} for m in misses], [0] * len(misses)
                )
            )
            pages = args.pages
            rows.append(
                await measure(searcher, "directory: first page", [{}] * pages, [len(names)] * pages)
            )
            cursors = sorted(rng.sample(sorted_lower, min(pages, len(names))))
            rows.append(
                await measure(
                    searcher,
                    "directory: page after a cursor",
                    [{"after": c} for c in cursors],
                    [len(sorted_lower) - bisect.bisect_right(sorted_lower, c) for c in cursors],
                )
            )
        finally:
            if searcher is not None:
                searcher.close()
            server.stop()
            store = Store(uri, db_name, timeout_ms=10_000)
            await store.drop_database()
            await store.close()
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="Latency of GET /api/users (prefix search and directory) at scale.",
    )
    parser.add_argument(
        "--users", type=int, default=100_000, help="users to insert (default %(default)s)"
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=200,
        help="searches per kind of prefix (default %(default)s; each kind stops after "
        f"{PHASE_BUDGET_SECS:.0f} s)",
    )
    parser.add_argument(
        "--pages", type=int, default=20, help="directory pages timed per kind (default %(default)s)"
    )
    parser.add_argument(
        "--limit", type=int, default=50, help="page size asked for (default %(default)s)"
    )
    parser.add_argument(
        "--mongo-uri",
        default=None,
        help="use this MongoDB instead of starting an embedded database for the run",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table(f"User search: {args.users:,} users, pages of {args.limit}", rows)


if __name__ == "__main__":
    main()
