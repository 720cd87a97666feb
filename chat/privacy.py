"""Privacy: who may start a conversation with whom, and message requests.

Each user chooses who may start a DM with it (`dm_policy`): `everyone` (the default) or
`friends`. A DM between people who are not friends is a request on the recipient's side from
its first message until the recipient replies or accepts it; from then on (and for a DM
between friends from its first message) the pair's DM is settled for good: a later change of
friendship or policy does not close a conversation both took part in. With `friends`, a
stranger can neither open a DM with the user nor send it a first message (403
`dm_not_allowed`); a pending request of that stranger stops there too.

The rules are here; conversations.py and messages.py call check_dm_open, check_dm_send and
dm_request_for (whose defaults in chat/commands.py allow everything).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from chat import shapes
from chat.batching import CachedReads
from chat.commands import Principal, Reply, command
from chat.conversations import ConversationCommands
from chat.errors import ChatError, NotFound, ValidationFailed
from chat.events import Event
from chat.store.conversations import Conversation, dm_key
from chat.store.privacy import DM_POLICIES, UserSettings
from chat.validation import ID, Fields, one_of, require_id, require_object

SETTLED_REMEMBERED = 100_000  # settled DM pairs kept in memory (a send there costs nothing)
SETTINGS_CACHE_USERS = 50_000  # users whose settings are kept (changed only by update here)


class DmNotAllowed(ChatError):
    """The recipient accepts new conversations from friends only."""

    code = "dm_not_allowed"
    status = 403


class PrivacyCommands(ConversationCommands):
    """settings.get, settings.update, conversations.accept; the DM rules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pairs whose DM is settled: settled is final, so this is never stale.
        self._settled: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Read at a stranger's every message until its request is answered.
        self._settings: CachedReads[str, UserSettings] = CachedReads(
            self.store.privacy.settings, SETTINGS_CACHE_USERS
        )

    def _remember_settled(self, pair: str) -> None:
        self._settled[pair] = None
        self._settled.move_to_end(pair)
        if len(self._settled) > SETTLED_REMEMBERED:
            self._settled.popitem(last=False)

    async def _are_friends(self, a: str, b: str) -> bool:
        return await self.store.social.friendship(a, b) is not None

    # -- the rules (hooks) ----------------------------------------------------------------

    async def check_dm_open(self, user_id: str, other_id: str) -> None:
        """DmNotAllowed when other_id takes DMs from friends only, user_id is not one, and
        their DM is not settled nor asked for by other_id."""
        if (await self._policy(other_id)) == "everyone":
            return
        pair = dm_key(user_id, other_id)
        if pair in self._settled or await self._are_friends(user_id, other_id):
            return
        state = await self.store.privacy.dm_state(pair)
        if state is not None and (state.state == "accepted" or state.from_id == other_id):
            return
        raise DmNotAllowed(
            "This user accepts messages from friends only. Send a friend request first.",
            field="user_id",
        )

    async def check_dm_send(self, conv: Conversation, sender_id: str) -> None:
        """Before a DM message is stored: settle the DM when the sender is a friend or the
        recipient of its request (a reply accepts it); start a request when the sender is a
        stranger and the recipient takes messages from everyone; else DmNotAllowed. A settled
        pair costs nothing; otherwise its reads go out together (one round trip), and only a
        request's first message or its answer writes."""
        if conv.kind != "dm":
            return
        others = [m.user_id for m in conv.members if m.user_id != sender_id]
        if not others:
            return
        other_id = others[0]
        pair = dm_key(sender_id, other_id)
        if pair in self._settled:
            return
        privacy = self.store.privacy
        state, friends, policy = await asyncio.gather(
            privacy.dm_state(pair),
            self._are_friends(sender_id, other_id),
            self._policy(other_id),
        )
        if state is not None and state.state == "accepted":
            self._remember_settled(pair)
            return
        if state is None and (friends or conv.last_seq > 0):
            # Between friends, or a DM with messages from before these rules: settled with
            # nothing to write, since a DM with messages and no state counts as settled.
            self._remember_settled(pair)
            return
        if state is not None and (state.to_id == sender_id or friends):
            # The recipient replied, or they became friends: the request is answered.
            if await privacy.settle(pair, conv.id, state.from_id, state.to_id):
                self._publish_accepted(state.to_id, conv.id)
            self._remember_settled(pair)
            return
        if policy == "friends":
            raise DmNotAllowed("This user accepts messages from friends only.")
        if state is None:
            await privacy.start_request(pair, conv.id, sender_id, other_id)

    async def _policy(self, user_id: str) -> str:
        settings = await self._settings.get(user_id)
        return settings.dm_policy if settings is not None else "everyone"

    async def dm_request_for(self, conv: Conversation, user_id: str) -> bool:
        """True when the conversation is a DM request waiting for this user's answer."""
        if conv.kind != "dm":
            return False
        others = [m.user_id for m in conv.members if m.user_id != user_id]
        if not others:
            return False
        pair = dm_key(user_id, others[0])
        if pair in self._settled:
            return False
        state = await self.store.privacy.dm_state(pair)
        if state is not None and state.state == "accepted":
            self._remember_settled(pair)
            return False
        return state is not None and state.to_id == user_id

    def _publish_accepted(self, user_id: str, conversation_id: str) -> None:
        # The recipient's other tabs move the conversation out of their requests.
        event: Event = {"type": "conversation.accepted", "conversation_id": conversation_id}
        self.publish([user_id], event)

    # -- commands -------------------------------------------------------------------------

    @command("settings.get", gives=shapes.SETTINGS)
    async def get_settings(self, principal: Principal, data: Any) -> Reply:
        """The caller's settings (defaults until it changes one)."""
        settings = await self.store.privacy.settings(principal.user_id)
        return {"settings": settings.to_dict()}

    @command(
        "settings.update",
        takes=Fields({"dm_policy": one_of(*DM_POLICIES)}),
        gives=shapes.SETTINGS,
    )
    async def update_settings(self, principal: Principal, data: Any) -> Reply:
        """Change the given settings (`dm_policy`: everyone | friends); the others stay."""
        data = require_object(data)
        changes: dict[str, Any] = {}
        if "dm_policy" in data:  # other fields are ignored, as by every command
            if data["dm_policy"] not in DM_POLICIES:
                raise ValidationFailed(
                    "dm_policy must be 'everyone' or 'friends'.", field="dm_policy"
                )
            changes["dm_policy"] = data["dm_policy"]
        settings = await self.store.privacy.update_settings(principal.user_id, changes)
        self._settings.forget(principal.user_id)
        return {"settings": settings.to_dict()}

    @command(
        "conversations.accept",
        takes=Fields({"conversation_id": ID}, ("conversation_id",)),
        gives=shapes.CONVERSATION,
        errors=(403, 404),
    )
    async def accept_conversation(self, principal: Principal, data: Any) -> Reply:
        """Accept a DM request: the conversation leaves the caller's requests (idempotent;
        any DM the caller belongs to may be accepted)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        me = principal.user_id
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if conv.kind != "dm":
            raise NotFound("No such DM request.")
        others = [m.user_id for m in conv.members if m.user_id != me]
        if others:
            pair = dm_key(me, others[0])
            state = await self.store.privacy.dm_state(pair)
            starter = state.from_id if state is not None else others[0]
            receiver = state.to_id if state is not None else me
            if await self.store.privacy.settle(pair, conv.id, starter, receiver):
                self._publish_accepted(me, conv.id)
            self._remember_settled(pair)
        return {"conversation": await self.render(conv, me)}
