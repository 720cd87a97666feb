"""`chat-server service-key create NAME | list | revoke NAME`: the keys services send system
notifications with (chat/notifications.py). A key is printed once, at creation; the database
keeps only its SHA-256, so a lost key is revoked and created again, never shown."""

from __future__ import annotations

import sys

from chat.config import Settings
from chat.errors import DatabaseUnavailable
from chat.models import iso
from chat.notifications import new_service_key
from chat.store import Store

ACTIONS = {"create": True, "list": False, "revoke": True}  # action -> takes a NAME
NAME_MAX = 64


def split_action(args: list[str]) -> tuple[str, str | None, list[str]]:
    """(action, NAME or None, the server options that follow); SystemExit(2) when malformed."""
    usage = "usage: chat-server service-key {create NAME | list | revoke NAME} [options]"
    if not args or args[0] not in ACTIONS:
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    action, rest = args[0], args[1:]
    if not ACTIONS[action]:
        return action, None, rest
    if not rest or rest[0].startswith("-") or not 1 <= len(rest[0]) <= NAME_MAX:
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    return action, rest[0], rest[1:]


async def run(settings: Settings, action: str, name: str | None) -> int:
    """Do the action on the settings' database; the exit status."""
    store = Store(settings.mongo_uri, settings.db_name, timeout_ms=settings.db_timeout_ms)
    try:
        await store.ensure_indexes()
        return await _act(store, action, name)
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _act(store: Store, action: str, name: str | None) -> int:
    keys = store.notifications
    if action == "list":
        for key in await keys.keys():
            print(f"{key.name}\t{iso(key.created_at)}")
        return 0
    assert name is not None
    if action == "revoke":
        if not await keys.revoke_key(name):
            print(f"error: no service key named {name!r}", file=sys.stderr)
            return 1
        print(f"revoked {name}", file=sys.stderr)
        return 0
    secret = new_service_key()
    if await keys.add_key(name, secret) is None:
        print(f"error: a service key named {name!r} exists (revoke it first)", file=sys.stderr)
        return 1
    print(secret)
    print(f"created {name}: the key above is shown only now; keep it secret", file=sys.stderr)
    return 0
