"""The JSON Schemas of what the commands answer: each command names its reply with these
(`gives=` of @command), and the OpenAPI document (chat/openapi.py) shows them as components.
Objects stay open (additionalProperties allowed): a client must ignore fields it does not know."""

from __future__ import annotations

from chat.validation import ID, Schema

TIME: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "ISO-8601 UTC with milliseconds: 2026-11-20T12:34:56.789Z.",
}
OPTIONAL_TIME: Schema = {"anyOf": [TIME, {"type": "null"}]}
SEQ: Schema = {"type": "integer", "minimum": 0}


def ref(name: str) -> Schema:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these fields (required ones always present)."""
    shown: Schema = {
        "type": "object",
        "properties": {**required, **(optional or {})},
    }
    if required:
        shown["required"] = list(required)
    return shown


def list_of(schema: Schema) -> Schema:
    return {"type": "array", "items": schema}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


B64: Schema = {"type": "string", "contentEncoding": "base64"}
KEY_ID: Schema = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
MAX_ENVELOPES = 200  # per message: one per device of a group's members (chat/e2e.py)
ENVELOPES: Schema = {
    "type": "array",
    "maxItems": MAX_ENVELOPES,
    "items": {"$ref": "#/components/schemas/Envelope"},
}

_PUBLIC_USER = {"id": ID, "username": {"type": "string"}, "last_seen": OPTIONAL_TIME}
PRESENCE: Schema = {"type": "string", "enum": ["online", "offline"]}

# Every component schema, by name: the document's components.schemas.
COMPONENTS: dict[str, Schema] = {
    "PublicUser": obj(_PUBLIC_USER),
    "PrivateUser": obj(
        {
            **_PUBLIC_USER,
            "email": {"type": "string"},
            "friend_code": {"type": "string", "pattern": "^[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}$"},
            "created_at": TIME,
            "role": {"type": "string", "enum": ["user", "moderator", "admin"]},
        }
    ),
    "UserWithPresence": obj({**_PUBLIC_USER, "presence": PRESENCE}),
    "Friend": obj({**_PUBLIC_USER, "presence": PRESENCE, "friends_since": OPTIONAL_TIME}),
    "UserRef": obj({"id": ID, "username": {"type": "string"}}),
    "FriendRequestRef": obj(
        {
            "id": ID,
            "from_user_id": ID,
            "to_user_id": ID,
            "status": {"type": "string", "enum": ["pending", "accepted", "declined", "cancelled"]},
            "created_at": TIME,
        }
    ),
    "FriendRequest": {
        "allOf": [
            ref("FriendRequestRef"),
            obj({"from_user": ref("PublicUser"), "to_user": ref("PublicUser")}),
        ]
    },
    "Block": obj({"user": ref("UserRef"), "created_at": TIME}),
    "Attachment": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "content_type": {"type": "string"},
            "kind": {"type": "string"},
        },
        {
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "url": {"type": "string"},
            "thumbnail_url": {"type": "string"},
            "sha256": {"type": "string"},
            "encrypted": {
                "type": "boolean",
                "description": "uploaded encrypted (docs/e2e.md): ciphertext, a generic name",
            },
        },
    ),
    "Message": obj(
        {
            "id": ID,
            "conversation_id": ID,
            "seq": {"type": "integer", "minimum": 1},
            "sender_id": ID,
            "body": {"type": "string"},
            "client_msg_id": {"type": "string"},
            "created_at": TIME,
        },
        {
            "attachments": list_of(ref("Attachment")),
            "edited_at": TIME,
            "deleted": {"type": "boolean"},
            "deleted_at": TIME,
            "deleted_by": ID,
            "reply_to": obj(
                {"id": ID, "seq": {"type": "integer", "minimum": 1}, "sender_id": ID},
                {
                    "excerpt": {
                        "type": "string",
                        "description": "the start of the quoted body (absent once deleted)",
                    },
                    "deleted": {"type": "boolean"},
                },
            ),
            "mentions": list_of(ID),
            "encrypted": {"type": "boolean"},
            "sender_device_id": ID,
            "envelopes": list_of(ref("Envelope")),
            "no_envelope": {
                "type": "boolean",
                "description": "encrypted before this device existed: nothing for it",
            },
            "reactions": list_of(
                obj(
                    {
                        "emoji": {"type": "string"},
                        "count": {"type": "integer", "minimum": 1},
                        "user_ids": list_of(ID),
                    },
                    {"me": {"type": "boolean"}},
                )
            ),
            "kind": {"type": "string", "enum": ["invitation"]},
            "invitation": obj(
                {
                    "id": ID,
                    "game": {"type": "string"},
                    "from": ID,
                    "status": {
                        "type": "string",
                        "enum": ["pending", "accepted", "declined", "cancelled", "expired"],
                    },
                    "expires_at": TIME,
                    "data": {"type": "object"},
                },
                {"to": ID, "match_id": {"type": "string"}, "answered_by": ID, "answered_at": TIME},
            ),
        },
    ),
    "Envelope": obj(
        {
            "user_id": ID,
            "device_id": ID,
            "type": {"type": "string", "enum": ["prekey", "message"]},
            "header": obj(
                {"dh": B64, "pn": KEY_ID, "n": KEY_ID},
                {
                    "ik": B64,
                    "ek": B64,
                    "spk_id": KEY_ID,
                    "opk_id": {"anyOf": [KEY_ID, {"type": "null"}]},
                },
            ),
            "ciphertext": B64,
        }
    ),
    "SignedPrekey": obj({"id": KEY_ID, "key": B64, "signature": B64}),
    "Prekey": obj({"id": KEY_ID, "key": B64}),
    "Device": obj(
        {
            "user_id": ID,
            "device_id": ID,
            "identity_key": B64,
            "signing_key": B64,
            "fingerprint": {"type": "string", "description": "SHA-256 of the identity key, hex"},
            "created_at": TIME,
        },
        {"signed_prekey": ref("SignedPrekey"), "one_time_prekeys": {"type": "integer"}},
    ),
    "Bundle": obj(
        {
            "user_id": ID,
            "device_id": ID,
            "identity_key": B64,
            "signing_key": B64,
            "signed_prekey": ref("SignedPrekey"),
            "one_time_prekey": nullable(ref("Prekey")),
        }
    ),
    "Member": obj(
        {
            "user_id": ID,
            "username": {"type": "string"},
            "role": {"type": "string", "enum": ["owner", "admin", "member"]},
            "joined_at": TIME,
        }
    ),
    "Conversation": obj(
        {
            "id": ID,
            "kind": {"type": "string", "enum": ["dm", "group"]},
            "name": nullable({"type": "string"}),
            "members": list_of(ref("Member")),
            "last_seq": SEQ,
            "created_at": TIME,
            "last_activity_at": TIME,
        },
        {  # per caller; absent where the conversation is one payload for every member
            "last_message": nullable(ref("Message")),
            "unread_count": {"type": "integer", "minimum": 0},
            "read_seq": SEQ,
            "reads": {"type": "object", "additionalProperties": SEQ},
            "request": {"type": "boolean"},
            "blocked": {"type": "boolean"},
            "encrypted": {"type": "boolean", "description": "end-to-end encrypted"},
        },
    ),
    "Settings": obj({"dm_policy": {"type": "string", "enum": ["everyone", "friends"]}}),
    "Session": obj({"user": ref("PrivateUser"), "token": {"type": "string"}, "expires_at": TIME}),
    "Error": obj(
        {
            "error": obj(
                {"code": {"type": "string"}, "message": {"type": "string"}},
                {
                    "field": {"type": "string", "description": "the input field at fault"},
                    "retry_after": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "429 only: seconds to wait (also Retry-After)",
                    },
                },
            )
        }
    ),
}


def reply(**fields: Schema) -> Schema:
    """A command's reply: an object with these top-level fields, all present."""
    return obj(fields)


EMPTY: Schema = {"type": "object"}
USER = reply(user=ref("PrivateUser"))
CONVERSATION = reply(conversation=ref("Conversation"))
REQUEST = reply(request=ref("FriendRequestRef"))
SETTINGS = reply(settings=ref("Settings"))
