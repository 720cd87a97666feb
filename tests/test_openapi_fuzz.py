"""Schemathesis against the live server, driven by GET /api/openapi.json: no 5xx, no status
the document does not list, no body or content type that breaks it. A short run is part of
the suite; `pytest -m fuzz` runs a long one (deselected by default, see README)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from chat.moderation import set_role_by_name
from tests.conftest import RunningServer, ServerFactory

# Every check but one: no server error, every status listed, every body, content type and
# required header as described, invalid input refused, 405 with Allow for other methods,
# auth not ignored, deleted things gone. Not positive_data_acceptance: JSON Schema cannot say
# what the contract's JSON limits refuse anywhere in a body (an integer past 64 bits in an
# ignored field is a 400), nor count a password's bytes. Nor ensure_resource_availability:
# it takes any 404 after a create for the created thing missing, where it is a user named in
# the body (groups.add_members with unknown user_ids).
CHECKS = (
    "--checks",
    "all",
    "--exclude-checks",
    "positive_data_acceptance,ensure_resource_availability",
)
# Signing out would end the fuzzer's own session (every later case would be a 401); so would
# revoking it (the stateful phase finds its id in the sessions list) or deleting the account
# (a password that the fuzzer cannot guess protects it, but the case is not worth the risk).
EXCLUDED = ("auth.logout", "account.delete", "account.sessions.revoke")
SHORT_EXAMPLES = 8  # per operation and phase: the whole short run stays well under 60 s
SHORT_TIME_SECS = 45
LONG_EXAMPLES = int(os.environ.get("CHAT_FUZZ_EXAMPLES", "200"))
LONG_TIME_SECS = int(os.environ.get("CHAT_FUZZ_SECS", "600"))
SEED = os.environ.get("CHAT_FUZZ_SEED", "20")  # the same cases every run unless told


async def fuzz_server(make_server: ServerFactory, tmp_path: Path) -> tuple[RunningServer, str]:
    """A server, a signed-in user with a friend, a group and a DM, and a schemathesis config
    that uses their ids most of the time (else every case on a conversation is a 404)."""
    server = await make_server()
    me = await server.client().register("fuzzer")
    friend = await server.client().register("friend")
    # A site moderator, so that the admin commands run past their 403: it cannot suspend
    # itself, and cannot change roles (administrators only), so it keeps its session.
    assert await set_role_by_name(server.store, "fuzzer", "moderator")
    mine = server.client(me["token"])
    friend_id = friend["user"]["id"]
    group = await mine.post("/api/groups", {"name": "fuzz", "member_ids": [friend_id]})
    dm = await mine.post("/api/conversations/dm", {"user_id": friend_id})
    conversations = [group.body["conversation"]["id"], dm.body["conversation"]["id"]]
    (tmp_path / "schemathesis.toml").write_text(
        f"[dictionaries.conversations]\nvalues = {json.dumps(conversations)}\n"
        f"[dictionaries.users]\nvalues = {json.dumps([friend_id])}\n"
        "[parameters]\n"
        '"path.conversation_id" = { dictionary = "conversations", probability = 0.7 }\n'
        '"path.user_id" = { dictionary = "users", probability = 0.7 }\n'
        '"body.user_id" = { dictionary = "users", probability = 0.7 }\n'
        # A long-poll on a real queue (stateful links find one) waits up to its timeout, 25 s
        # by default, past the client's 10 s: it always says how long, and 0 answers at once.
        '"query.timeout" = 0\n'
    )
    return server, me["token"]


async def run_schemathesis(
    server: RunningServer, token: str, tmp_path: Path, *options: str
) -> tuple[int, str, list[dict[str, Any]]]:
    """Run the CLI against the server (which goes on serving on this loop meanwhile); its
    exit status, its output and the failures its NDJSON report names."""
    report = tmp_path / "events.ndjson"
    args = [
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{server.base_url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        *CHECKS,
        "--workers",
        "1",
        "--seed",
        SEED,
        "--no-color",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "10",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        *[f"--exclude-operation-id={op}" for op in EXCLUDED],
        *options,
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,  # its crash cache goes there, not into the work tree
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), failures_in(report)


def failures_in(report: Path) -> list[dict[str, Any]]:
    """The failed checks an NDJSON report records (each with its operation and message)."""
    found: list[dict[str, Any]] = []
    if not report.exists():
        return found
    for line in report.read_text().splitlines():
        found += [
            item for item in _walk(json.loads(line)) if str(item.get("status")).lower() == "failure"
        ]
    return found


def _walk(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        here = [value] if "status" in value and "name" in value else []
        return here + [x for v in value.values() for x in _walk(v)]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v)]
    return []


@pytest.mark.parametrize(
    ("examples", "seconds"),
    [
        pytest.param(SHORT_EXAMPLES, SHORT_TIME_SECS, id="short"),
        pytest.param(LONG_EXAMPLES, LONG_TIME_SECS, id="long", marks=pytest.mark.fuzz),
    ],
)
async def test_schemathesis_finds_nothing(
    make_server: ServerFactory, tmp_path: Path, examples: int, seconds: int
) -> None:
    """Every phase: schema examples, coverage (each boundary and each kind of invalid value),
    fuzzing, and stateful sequences that feed one answer's ids into the next request."""
    server, token = await fuzz_server(make_server, tmp_path)
    status, out, failures = await run_schemathesis(
        server,
        token,
        tmp_path,
        "--max-examples",
        str(examples),
        "--max-time",
        str(seconds),
        "--phases",
        "examples,coverage,fuzzing,stateful",
    )
    assert status == 0 and not failures, out[-20000:]
