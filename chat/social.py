"""Social graph: user directory and search, friend requests, friends, blocking.

Visibility rules, in one place:
- A blocked pair (either direction) do not find each other in the directory, in search or by
  friend code, cannot send each other friend requests (403 `blocked`), and never see each
  other's presence (presence_audience subtracts `blocked_either_way`).
- Blocking ends a friendship and removes a pending request between the pair; the other side is
  told exactly what an ordinary removal, decline or cancellation would tell it, nothing more.
- Group conversations are not the social graph's business: a block leaves membership and
  messages there alone, and stops only typing and read receipts between the pair
  (chat/messages.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Any

from chat import shapes
from chat.batching import CachedReads, shared_frozenset
from chat.commands import Principal, Reply, ServiceBase, StatusReply, command
from chat.errors import Blocked, Conflict, NotFound, ValidationFailed
from chat.models import User, iso
from chat.store import normalize_friend_code
from chat.store.accounts import FRIEND_CODE_ALPHABET, FRIEND_CODE_LEN
from chat.store.notifications import NewNotification
from chat.store.social import FriendRequest
from chat.validation import (
    ID,
    LIMIT,
    NONEMPTY_TEXT,
    USERNAME_MAX,
    USERNAME_RE,
    Fields,
    get_limit,
    get_str,
    require_id,
    require_object,
    require_str,
)

SEARCH_PAGE = 50  # users per page when the client does not say
A_USER = Fields({"user_id": ID}, ("user_id",))  # the input of friends.remove and blocks.*
A_REQUEST = Fields({"request_id": ID}, ("request_id",))  # friends.accept, decline, cancel
CURSOR_MAX = 64  # an `after` cursor is a lower-cased username (at most 32 characters)
REQUEST_RETRIES = 3  # a request racing with the other side's request or cancellation


@dataclasses.dataclass(frozen=True)
class SearchInput:
    prefix: str | None  # lower-cased; "" lists everyone; None: no username can match
    after: str | None
    limit: int


def parse_search(data: Any) -> SearchInput:
    """users.search's fields: q (a username prefix, any case), after (cursor) and limit."""
    data = require_object(data)
    q = (get_str(data, "q", required=False) or "").strip()
    after = get_str(data, "after", required=False) or None
    if after is not None and len(after) > CURSOR_MAX:
        raise ValidationFailed("after is not a cursor this server issued.", field="after")
    limit = get_limit(data, default=SEARCH_PAGE)
    prefix: str | None = q.lower()
    # Usernames are ASCII: a prefix outside their alphabet (accents, emoji, spaces) can match
    # nobody. Lowering only after this check keeps Unicode case folds such as the Kelvin
    # sign (which lowers to "k") from matching names they do not start with.
    if q and (len(q) > USERNAME_MAX or not USERNAME_RE.fullmatch(q)):
        prefix = None
    return SearchInput(prefix=prefix, after=after, limit=limit)


def friend_code_key(raw: str, field: str) -> str | None:
    """The stored form of a friend code as typed (any case, dash optional); None when it
    cannot be one of ours."""
    code = normalize_friend_code(raw)
    if not code:
        raise ValidationFailed(f"{field} is required.", field=field)
    if len(code) != FRIEND_CODE_LEN or not set(code) <= set(FRIEND_CODE_ALPHABET):
        return None
    return code


def user_ref(user: User) -> Reply:
    """Who a user is, without presence: for events and lists where presence must not show."""
    return {"id": user.id, "username": user.username}


def request_ref(request: FriendRequest, status: str) -> Reply:
    """A request by ids only: what the other side of an ended request is told."""
    return {
        "id": request.id,
        "from_user_id": request.from_id,
        "to_user_id": request.to_id,
        "status": status,
        "created_at": iso(request.created_at),
    }


def request_view(request: FriendRequest, users: dict[str, User], status: str) -> Reply:
    """A request with both users as public users (the same payload for either side)."""
    return {
        **request_ref(request, status),
        "from_user": users[request.from_id].public(),
        "to_user": users[request.to_id].public(),
    }


# Users whose blocks (made and received) are kept in memory: a send, a typing event and a
# presence announcement each ask; a block or unblock here invalidates both users' entries.
BLOCK_CACHE_USERS = 50_000


class SocialCommands(ServiceBase):
    """Users, friends and blocks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._blocks: CachedReads[str, frozenset[str]] = CachedReads(
            self._load_blocks, BLOCK_CACHE_USERS
        )

    async def _load_blocks(self, user_id: str) -> frozenset[str]:
        return shared_frozenset(await self.store.social.blocked_either_way(user_id))

    def _blocks_changed(self, a: str, b: str) -> None:
        """A block between a and b was stored or lifted: what this process, and every other
        on the bus, keeps of both users' blocks and presence audiences is read again (also by
        a read overlapping it)."""
        self.blocks_changed_elsewhere([a, b])
        self.bus.publish("blocks.changed", [a, b])

    def blocks_changed_elsewhere(self, users: Any) -> None:
        """Forget what is kept of these users' blocks and audiences (a bus notice, or here)."""
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            return
        for user_id in users:
            self._blocks.forget(user_id)
        self.presence.audience_changed(users)

    # -- hooks the other domains rely on -----------------------------------------------

    async def presence_candidates(self, user_id: str) -> set[str]:
        """Adds the user's friends to who sees its presence."""
        return await super().presence_candidates(user_id) | await self.store.social.friend_ids(
            user_id
        )

    async def blocked_either_way(self, user_id: str) -> set[str]:
        """Users this user blocked or who blocked it."""
        return set(await self._blocks.get(user_id) or ())

    async def is_blocked_between(self, a: str, b: str) -> bool:
        """True when either user blocked the other."""
        if a == b:
            return False
        return b in (await self._blocks.get(a) or ())

    # -- helpers ----------------------------------------------------------------------

    def with_presence(self, users: Iterable[User]) -> list[Reply]:
        """Public users with `presence` (online/offline) and the freshest `last_seen`."""
        users = list(users)
        statuses = self.presence_of(u.id for u in users)
        return [
            {
                **user.public(),
                "presence": statuses[user.id],
                # This process may know a newer offline time than the stored one.
                "last_seen": iso(self.presence.last_seen(user.id) or user.last_seen),
            }
            for user in users
        ]

    async def _user(self, user_id: str) -> User:
        user = await self.store.users.get(user_id)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def _pair(self, a: str, b: str) -> dict[str, User]:
        users = await self.store.users.get_many([a, b])
        if a not in users or b not in users:
            raise NotFound("No such user.")
        return users

    async def _visible_by_code(self, viewer_id: str, raw: str, field: str) -> User:
        """The user with this friend code, unless a block hides it from the viewer."""
        code = friend_code_key(raw, field)
        user = await self.store.users.get_by_friend_code(code) if code else None
        if user is None or await self.is_blocked_between(viewer_id, user.id):
            raise NotFound("No user has that friend code.", field=field)
        return user

    def _publish_request_ended(self, request: FriendRequest, status: str) -> None:
        # Both sides: the other learns its request is gone, the actor's other tabs update.
        event = {"type": "friend.request.cancelled", "request": request_ref(request, status)}
        self.publish([request.from_id, request.to_id], event)

    async def _friends_now(self, request: FriendRequest, actor_id: str) -> Reply:
        """Store the friendship of a taken request, tell both, and reply to the actor."""
        a, b = request.from_id, request.to_id
        await self.store.social.add_friendship(a, b)
        self.presence.audience_changed((a, b))
        if await self.is_blocked_between(a, b):
            # A block landed after the request was taken: the block wins, and whoever still
            # shows the request learns it is gone.
            await self.store.social.remove_friendship(a, b)
            self.presence.audience_changed((a, b))
            self._publish_request_ended(request, "declined")
            raise Blocked("You cannot become friends with this user.")
        users = await self._pair(a, b)
        view = request_view(request, users, "accepted")
        for me, other in ((a, b), (b, a)):
            # Each side gets the other with its current presence: from now on it receives
            # that user's presence changes, and must not wait for the next one to show it.
            [friend] = self.with_presence([users[other]])
            self.publish([me], {"type": "friend.accepted", "request": view, "user": friend})
        other_id = b if actor_id == a else a
        note = NewNotification("friend.accepted", actor_id, data={"request_id": request.id})
        await self.notify([other_id], note)
        [friend] = self.with_presence([users[other_id]])
        return {"request": view, "user": friend}

    # -- directory ----------------------------------------------------------------------

    @command(
        "users.search",
        takes=Fields(
            {
                "q": {"type": "string", "description": "a username prefix, any case"},
                "after": {"type": "string", "maxLength": CURSOR_MAX},
                "limit": LIMIT,
            }
        ),
        gives=shapes.reply(
            users=shapes.list_of(shapes.ref("UserWithPresence")),
            has_more={"type": "boolean"},
            next_after=shapes.nullable({"type": "string"}),
        ),
    )
    async def search_users(self, principal: Principal, data: Any) -> Reply:
        """Users whose username starts with q (any case), or everyone without q, in username
        order with presence; paginated by `after`. Never the caller, never across a block."""
        fields = parse_search(data)
        if fields.prefix is None:
            return {"users": [], "has_more": False, "next_after": None}
        hidden = await self.blocked_either_way(principal.user_id) | {principal.user_id}
        users, has_more = await self.store.users.search(
            fields.prefix, after=fields.after, limit=fields.limit, exclude=hidden
        )
        return {
            "users": self.with_presence(users),
            "has_more": has_more,
            "next_after": users[-1].username.lower() if has_more and users else None,
        }

    @command(
        "users.by_code",
        takes=Fields({"code": NONEMPTY_TEXT}, ("code",)),
        gives=shapes.reply(user=shapes.ref("UserWithPresence")),
        errors=(404,),
    )
    async def user_by_code(self, principal: Principal, data: Any) -> Reply:
        """The user with this friend code (any case, dash optional), with presence; 404 for
        an unknown code and across a block."""
        data = require_object(data)
        user = await self._visible_by_code(principal.user_id, require_str(data, "code"), "code")
        [view] = self.with_presence([user])
        return {"user": view}

    # -- friends ------------------------------------------------------------------------

    @command("friends.list", gives=shapes.reply(friends=shapes.list_of(shapes.ref("Friend"))))
    async def list_friends(self, principal: Principal, data: Any) -> Reply:
        """The caller's friends with presence and since when, in username order."""
        me = principal.user_id
        friendships = await self.store.social.friendships_of(me)
        since = {f.other(me): f.created_at for f in friendships}
        hidden = await self.blocked_either_way(me)
        users = await self.store.users.get_many([u for u in since if u not in hidden])
        ordered = sorted(users.values(), key=lambda u: u.username.lower())
        return {
            "friends": [
                {**view, "friends_since": iso(since[view["id"]])}
                for view in self.with_presence(ordered)
            ]
        }

    @command(
        "friends.requests",
        gives=shapes.reply(
            requests=shapes.reply(
                incoming=shapes.list_of(shapes.ref("FriendRequest")),
                outgoing=shapes.list_of(shapes.ref("FriendRequest")),
            )
        ),
    )
    async def list_requests(self, principal: Principal, data: Any) -> Reply:
        """Pending requests to and from the caller, newest first."""
        me = principal.user_id
        incoming = await self.store.social.incoming(me)
        outgoing = await self.store.social.outgoing(me)
        hidden = await self.blocked_either_way(me)
        others = {r.from_id for r in incoming} | {r.to_id for r in outgoing}
        users = await self.store.users.get_many([me, *(others - hidden)])

        def views(requests: list[FriendRequest]) -> list[Reply]:
            return [
                request_view(r, users, "pending")
                for r in requests
                if r.from_id in users and r.to_id in users
            ]

        return {"requests": {"incoming": views(incoming), "outgoing": views(outgoing)}}

    @command(
        "friends.request",
        status=201,
        also=(200,),
        takes=Fields(
            {"user_id": ID, "friend_code": NONEMPTY_TEXT},
            rule={"oneOf": [{"required": ["user_id"]}, {"required": ["friend_code"]}]},
        ),
        gives=shapes.obj(
            {"request": shapes.ref("FriendRequestRef")},
            {"user": shapes.ref("UserWithPresence")},
        ),
        errors=(403, 404, 409),
    )
    async def send_request(self, principal: Principal, data: Any) -> Reply:
        """Ask a user (by user_id or friend_code) to be friends: 201 with the pending request,
        or 200 with the friendship when that user had already asked the caller."""
        me = principal.user_id
        data = require_object(data)
        user_id = get_str(data, "user_id", required=False)
        code = get_str(data, "friend_code", required=False)
        if (user_id is None) == (code is None):
            raise ValidationFailed("Give either user_id or friend_code.", field="user_id")
        if user_id is not None:
            field = "user_id"
            target = await self._user(require_id(data, "user_id"))
        else:
            field = "friend_code"
            target = await self._visible_by_code(me, code or "", "friend_code")
        if target.id == me:
            raise ValidationFailed("You cannot send a friend request to yourself.", field=field)
        if await self.is_blocked_between(me, target.id):
            raise Blocked("You cannot send a friend request to this user.")
        if await self.store.social.friendship(me, target.id) is not None:
            raise Conflict("You are already friends.", field=field)
        for _ in range(REQUEST_RETRIES):
            pending = await self.store.social.pending_between(me, target.id)
            if pending is not None and pending.from_id == me:
                raise Conflict("You already asked this user; the request is pending.", field=field)
            if pending is not None:
                # They asked first: asking back means yes.
                taken = await self.store.social.take_request(pending.id, to_id=me)
                if taken is not None:
                    return StatusReply(200, await self._friends_now(taken, me))
                continue  # cancelled meanwhile: try to send ours
            created = await self.store.social.create_request(me, target.id)
            if created is None:
                continue  # a request between us appeared meanwhile: look again
            if await self.is_blocked_between(me, target.id):
                # A block landed meanwhile; its cleanup may have run before our insert.
                await self.store.social.take_request(created.id)
                raise Blocked("You cannot send a friend request to this user.")
            users = await self._pair(me, target.id)
            view = request_view(created, users, "pending")
            # The recipient, and the sender's other tabs (they list outgoing requests).
            self.publish([target.id, me], {"type": "friend.request", "request": view})
            note = NewNotification("friend.request", me, data={"request_id": created.id})
            await self.notify([target.id], note)
            return {"request": view}
        raise Conflict("The request changed concurrently; try again.", field=field)

    @command(
        "friends.accept",
        takes=A_REQUEST,
        gives=shapes.reply(
            request=shapes.ref("FriendRequestRef"), user=shapes.ref("UserWithPresence")
        ),
        errors=(404,),
    )
    async def accept_request(self, principal: Principal, data: Any) -> Reply:
        """Accept a request made to the caller: both become friends and both are told; 404
        when it is not pending (cancelled, already answered) or not addressed to the caller."""
        request_id = require_id(require_object(data), "request_id")
        taken = await self.store.social.take_request(request_id, to_id=principal.user_id)
        if taken is None:
            raise NotFound("No such pending friend request.")
        return await self._friends_now(taken, principal.user_id)

    @command("friends.decline", takes=A_REQUEST, gives=shapes.REQUEST, errors=(404,))
    async def decline_request(self, principal: Principal, data: Any) -> Reply:
        """Decline a request made to the caller; the sender gets friend.request.cancelled."""
        request_id = require_id(require_object(data), "request_id")
        taken = await self.store.social.take_request(request_id, to_id=principal.user_id)
        if taken is None:
            raise NotFound("No such pending friend request.")
        self._publish_request_ended(taken, "declined")
        return {"request": request_ref(taken, "declined")}

    @command("friends.cancel", takes=A_REQUEST, gives=shapes.REQUEST, errors=(404,))
    async def cancel_request(self, principal: Principal, data: Any) -> Reply:
        """Withdraw a request the caller made; the recipient gets friend.request.cancelled."""
        request_id = require_id(require_object(data), "request_id")
        taken = await self.store.social.take_request(request_id, from_id=principal.user_id)
        if taken is None:
            raise NotFound("No such pending friend request.")
        self._publish_request_ended(taken, "cancelled")
        return {"request": request_ref(taken, "cancelled")}

    @command(
        "friends.remove",
        takes=A_USER,
        gives=shapes.reply(user=shapes.ref("UserRef")),
        errors=(404,),
    )
    async def remove_friend(self, principal: Principal, data: Any) -> Reply:
        """End a friendship on both sides; both get friend.removed. 404 when not friends."""
        me = principal.user_id
        other_id = require_id(require_object(data), "user_id")
        users = await self._pair(me, other_id)
        if other_id == me or not await self.store.social.remove_friendship(me, other_id):
            raise NotFound("You are not friends with this user.")
        self.presence.audience_changed((me, other_id))
        self._publish_removed(users[me], users[other_id])
        return {"user": user_ref(users[other_id])}

    def _publish_removed(self, a: User, b: User) -> None:
        self.publish([a.id], {"type": "friend.removed", "user": user_ref(b)})
        self.publish([b.id], {"type": "friend.removed", "user": user_ref(a)})

    # -- blocks -------------------------------------------------------------------------

    @command(
        "blocks.add", takes=A_USER, gives=shapes.reply(block=shapes.ref("Block")), errors=(404,)
    )
    async def block_user(self, principal: Principal, data: Any) -> Reply:
        """Block a user (idempotent): ends a friendship and a pending request between the
        two, and from now on hides each from the other."""
        me = principal.user_id
        other_id = require_id(require_object(data), "user_id")
        if other_id == me:
            raise ValidationFailed("You cannot block yourself.", field="user_id")
        users = await self._pair(me, other_id)
        # Who sees whom before the block: those are told to drop the other's presence.
        saw = await self._seeing(me, other_id)
        block, _ = await self.store.social.add_block(me, other_id)
        self._blocks_changed(me, other_id)  # hidden from each other from now on
        # The block is stored first, then the pair is cleaned up: a request or acceptance
        # racing with it re-checks for the block after its own write, so one of the two
        # always sees the other (and the cleanup also runs again on a repeated block).
        ended = await self.store.social.remove_friendship(me, other_id)
        # Before friend.removed: a client drops the dot before it learns why.
        for user_id, watcher_id in saw:
            self.presence.withdraw(user_id, watcher_id)
        if ended:
            self._publish_removed(users[me], users[other_id])
        pending = await self.store.social.take_pending_between(me, other_id)
        if pending is not None:
            # Exactly what a decline (of a request to the blocker) or a cancellation (of the
            # blocker's own request) would tell the other side.
            self._publish_request_ended(pending, "declined" if pending.to_id == me else "cancelled")
        return {"block": {"user": user_ref(users[other_id]), "created_at": iso(block.created_at)}}

    @command("blocks.remove", takes=A_USER, gives=shapes.EMPTY, errors=(404,))
    async def unblock_user(self, principal: Principal, data: Any) -> Reply:
        """Lift a block the caller made; 404 when there is none. Friendship is not restored."""
        other_id = require_id(require_object(data), "user_id")
        removed = await self.store.social.remove_block(principal.user_id, other_id)
        if not removed:
            raise NotFound("You have not blocked this user.")
        self._blocks_changed(principal.user_id, other_id)
        if not await self.is_blocked_between(principal.user_id, other_id):
            # Presence comes back to whoever sees the other again (DM partners, say).
            for user_id, watcher_id in await self._seeing(principal.user_id, other_id):
                self.presence.restore(user_id, watcher_id)
        return {}

    async def _seeing(self, a: str, b: str) -> list[tuple[str, str]]:
        """(user, watcher) for each of the two directions in which the watcher receives the
        user's presence now."""
        pairs = [(a, b), (b, a)]
        seen = await asyncio.gather(*(self.presence.sees(w, u) for u, w in pairs))
        return [pair for pair, yes in zip(pairs, seen, strict=True) if yes]

    @command("blocks.list", gives=shapes.reply(blocks=shapes.list_of(shapes.ref("Block"))))
    async def list_blocks(self, principal: Principal, data: Any) -> Reply:
        """The users the caller blocked, newest first (without presence)."""
        blocks = await self.store.social.blocks_by(principal.user_id)
        users = await self.store.users.get_many([b.blocked_id for b in blocks])
        return {
            "blocks": [
                {"user": user_ref(users[b.blocked_id]), "created_at": iso(b.created_at)}
                for b in blocks
                if b.blocked_id in users
            ]
        }
