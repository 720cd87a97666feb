"""Groups: create, read, rename, add and remove members, roles; every change is made against
the conversation's current version and announced in the order of its messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from chat import shapes
from chat.commands import Principal, Reply, command
from chat.conversations import ConversationCommands, now_member
from chat.errors import (
    Blocked,
    ChatError,
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from chat.events import Event
from chat.models import User, utcnow
from chat.store.conversations import Conversation, Member, Role
from chat.store.notifications import NewNotification
from chat.validation import (
    GROUP_NAME,
    ID,
    Fields,
    check_group_name,
    get_flag,
    get_id_list,
    id_list,
    one_of,
    require_id,
    require_object,
    require_str,
)

GROUP_CHANGE_RETRIES = 20
IN_GROUP = Fields({"conversation_id": ID}, ("conversation_id",))  # the input of groups.get
GROUP_MEMBER = Fields({"conversation_id": ID, "user_id": ID}, ("conversation_id", "user_id"))


class GroupFull(ChatError):
    """The group would exceed the configured maximum size."""

    code = "group_full"
    status = 413


@dataclasses.dataclass(frozen=True)
class _GroupChange:
    members: list[Member]
    name: str | None = None
    removed: list[Member] = dataclasses.field(default_factory=list)
    readded: list[str] = dataclasses.field(default_factory=list)


class GroupCommands(ConversationCommands):
    """groups.create, groups.get, groups.update, groups.add_members, groups.remove_member,
    groups.set_role: each change made against the group's current version."""

    async def _users_for(self, principal: Principal, user_ids: list[str], field: str) -> list[User]:
        """These users, checked: they exist and no block stands between them and the caller."""
        users = await self.store.users.get_many(user_ids)
        missing = [uid for uid in user_ids if uid not in users]
        if missing:
            raise NotFound(f"No such user: {missing[0]}.", field=field)
        blocked = await self.blocked_either_way(principal.user_id) & set(user_ids)
        if blocked:
            raise Blocked(f"You cannot add user {sorted(blocked)[0]}.", field=field)
        return [users[uid] for uid in user_ids]

    def _check_size(self, size: int, field: str) -> None:
        limit = self.settings.max_group_size
        if size > limit:
            raise GroupFull(f"A group has at most {limit} members.", field=field)

    @command(
        "groups.create",
        status=201,
        takes=Fields(
            {"name": GROUP_NAME, "member_ids": id_list(), "encrypted": {"type": "boolean"}},
            ("name",),
        ),
        gives=shapes.CONVERSATION,
        errors=(403, 404, 413),
    )
    async def create_group(self, principal: Principal, data: Any) -> Reply:
        """A new group named `name` with the caller as owner and member_ids as members;
        group.created goes to every member."""
        data = require_object(data)
        name = check_group_name(require_str(data, "name"))
        encrypted = get_flag(data, "encrypted")  # end-to-end (chat/e2e.py), for good
        member_ids = [
            uid
            for uid in get_id_list(data, "member_ids", max_items=self.settings.max_group_size)
            if uid != principal.user_id
        ]
        self._check_size(1 + len(member_ids), "member_ids")
        others = await self._users_for(principal, member_ids, "member_ids")
        me = await self.store.users.get(principal.user_id)
        if me is None:
            raise NotFound("Your account no longer exists.")
        now = utcnow()
        members = [now_member(me, "owner", now)] + [now_member(u, "member", now) for u in others]
        conv = await self.store.conversations.create_group(name, members, encrypted=encrypted)
        self.publish(conv.member_ids, {"type": "group.created", "conversation": conv.shared_dict()})
        await self._notify_added(principal, conv, [u.id for u in others])
        return {"conversation": await self.render(conv, principal.user_id)}

    @command("groups.get", takes=IN_GROUP, gives=shapes.CONVERSATION, errors=(403, 404))
    async def get_group(self, principal: Principal, data: Any) -> Reply:
        """The group, for its current members."""
        data = require_object(data)
        conv = await self.access_group(principal, require_id(data, "conversation_id"))
        return {"conversation": await self.render(conv, principal.user_id)}

    async def _change_group(
        self,
        principal: Principal,
        conversation_id: str,
        decide: Callable[[Conversation], _GroupChange | None],
        events: Callable[[Conversation, Conversation, _GroupChange], list[tuple[list[str], Event]]],
    ) -> Conversation:
        """Apply decide's change to the group atomically (re-deciding on a concurrent change);
        its events are published in order with the messages around it."""
        conv = await self.access_group(principal, conversation_id)
        store = self.store.conversations
        with self.sequencer.line(conv.id) as line:
            async with line.lock:
                # This process's last change is the freshest guess; the write checks it.
                current = line.snapshot if line.snapshot is not None else conv
                for attempt in range(GROUP_CHANGE_RETRIES):
                    if attempt:
                        fresh = await self.load(conv.id)
                        if fresh is None:
                            raise NotFound("No such group.")
                        current = fresh
                    if current.member(principal.user_id) is None:
                        raise Forbidden("You are no longer a member of this group.")
                    change = decide(current)
                    if change is None:
                        return current
                    try:
                        new = await store.change_group(
                            current,
                            members=change.members,
                            name=change.name,
                            removed=change.removed,
                            readded=change.readded,
                        )
                    except BaseException:
                        line.snapshot = None
                        raise
                    if new is None:
                        continue
                    line.snapshot = new
                    for recipients, event in events(current, new, change):
                        self.sequencer.enqueue(line, recipients, event)
                    return new
        raise Conflict("The group is changing too fast right now; try again.")

    @staticmethod
    def _require_admin(conv: Conversation, user_id: str, action: str) -> Member:
        member = conv.member(user_id)
        if member is None or member.role not in ("owner", "admin"):
            raise Forbidden(f"Only the owner or an admin can {action}.")
        return member

    @command(
        "groups.update",
        takes=Fields({"conversation_id": ID, "name": GROUP_NAME}, ("conversation_id", "name")),
        gives=shapes.CONVERSATION,
        errors=(403, 404),
    )
    async def update_group(self, principal: Principal, data: Any) -> Reply:
        """Rename the group (owner or admin); group.updated goes to every member."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        name = check_group_name(require_str(data, "name"))

        def decide(conv: Conversation) -> _GroupChange | None:
            self._require_admin(conv, principal.user_id, "rename the group")
            return None if conv.name == name else _GroupChange(list(conv.members), name=name)

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {
                "type": "group.updated",
                "conversation": new.shared_dict(),
                "by": principal.user_id,
            }
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        return {"conversation": await self.render(conv, principal.user_id)}

    @command(
        "groups.add_members",
        takes=Fields(
            {"conversation_id": ID, "user_ids": {**id_list(), "minItems": 1}},
            ("conversation_id", "user_ids"),
        ),
        gives=shapes.CONVERSATION,
        errors=(403, 404, 413),
    )
    async def add_members(self, principal: Principal, data: Any) -> Reply:
        """Add user_ids as members (owner or admin), up to the maximum size;
        group.member_added goes to every member, the new ones included."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        user_ids = get_id_list(data, "user_ids", max_items=self.settings.max_group_size)
        if not user_ids:
            raise ValidationFailed("user_ids must name at least one user.", field="user_ids")
        await self.access_group(principal, conversation_id)  # before revealing anything else
        users = await self._users_for(principal, user_ids, "user_ids")
        now = utcnow()
        added_ids: list[str] = []  # who this change added, for their notifications

        def decide(conv: Conversation) -> _GroupChange | None:
            self._require_admin(conv, principal.user_id, "add members")
            new = [u for u in users if conv.member(u.id) is None]
            if not new:
                return None
            self._check_size(len(conv.members) + len(new), "user_ids")
            return _GroupChange(
                list(conv.members) + [now_member(u, "member", now) for u in new],
                readded=[u.id for u in new if conv.former_member(u.id) is not None],
            )

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            added = [m.user_id for m in new.members if old.member(m.user_id) is None]
            added_ids[:] = added
            event = {
                "type": "group.member_added",
                "conversation": new.shared_dict(),
                "user_ids": added,
                "by": principal.user_id,
            }
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        await self._notify_added(principal, conv, added_ids)
        return {"conversation": await self.render(conv, principal.user_id)}

    async def _notify_added(self, principal: Principal, conv: Conversation, ids: list[str]) -> None:
        """A group.added notification to each user just made a member."""
        note = NewNotification("group.added", principal.user_id, conv.id, {"name": conv.name})
        await self.notify(ids, note)

    @command(
        "groups.remove_member", takes=GROUP_MEMBER, gives=shapes.CONVERSATION, errors=(403, 404)
    )
    async def remove_member(self, principal: Principal, data: Any) -> Reply:
        """Remove user_id (owner: anyone; admin: members), or leave when it is the caller.
        A removed member keeps read-only access to what was sent before; if the owner leaves,
        the oldest admin (else the oldest member) becomes owner. group.member_removed goes to
        every remaining member and to the removed one."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        target = require_id(data, "user_id")
        me = principal.user_id

        def decide(conv: Conversation) -> _GroupChange | None:
            victim = conv.member(target)
            if victim is None:
                raise NotFound("That user is not a member of this group.", field="user_id")
            if target != me:
                actor = self._require_admin(conv, me, "remove members")
                if victim.role == "owner" or (victim.role == "admin" and actor.role != "owner"):
                    raise Forbidden("Only the owner can remove an admin; nobody removes the owner.")
            rest = [m for m in conv.members if m.user_id != target]
            if victim.role == "owner" and rest:
                heir = next((m for m in rest if m.role == "admin"), rest[0])
                rest = [dataclasses.replace(m, role="owner") if m is heir else m for m in rest]
            return _GroupChange(rest, removed=[victim])

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {
                "type": "group.member_removed",
                "conversation": new.shared_dict(),
                "user_id": target,
                "by": me,
            }
            return [([*new.member_ids, target], event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        if target == me:  # it can no longer see per-member state: the shape of the event
            return {"conversation": conv.shared_dict()}
        return {"conversation": await self.render(conv, me)}

    @command(
        "groups.set_role",
        takes=Fields(
            {**GROUP_MEMBER.properties, "role": one_of("admin", "member")},
            (*GROUP_MEMBER.required, "role"),
        ),
        gives=shapes.CONVERSATION,
        errors=(403, 404),
    )
    async def set_role(self, principal: Principal, data: Any) -> Reply:
        """Promote a member to admin or demote an admin to member (owner only);
        group.updated goes to every member."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        target = require_id(data, "user_id")
        role = require_str(data, "role")
        if role not in ("admin", "member"):
            raise ValidationFailed("role must be 'admin' or 'member'.", field="role")
        me = principal.user_id

        def decide(conv: Conversation) -> _GroupChange | None:
            actor = conv.member(me)
            if actor is None or actor.role != "owner":
                raise Forbidden("Only the owner can change roles.")
            member = conv.member(target)
            if member is None:
                raise NotFound("That user is not a member of this group.", field="user_id")
            if member.role == "owner":
                raise ValidationFailed("The owner's role cannot be changed.", field="user_id")
            if member.role == role:
                return None
            new_role: Role = "admin" if role == "admin" else "member"
            return _GroupChange(
                [dataclasses.replace(m, role=new_role) if m is member else m for m in conv.members]
            )

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {"type": "group.updated", "conversation": new.shared_dict(), "by": me}
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        return {"conversation": await self.render(conv, me)}
