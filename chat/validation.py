"""Raw JSON values -> typed input, or a ValidationFailed naming the field at fault."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from chat.errors import ValidationFailed

USERNAME_MIN, USERNAME_MAX = 3, 32
USERNAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
EMAIL_MAX = 254  # RFC 5321's limit on a forward path
# One @, no spaces, a dot in the domain, no empty labels: syntactic validity, not deliverability.
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
PASSWORD_MIN_BYTES, PASSWORD_MAX_BYTES = 8, 72  # 72: bcrypt ignores what follows; we refuse it
BODY_MAX_CHARS = 4000
GROUP_NAME_MAX = 64
CLIENT_MSG_ID_MAX = 64
ID_MAX = 64
PAGE_MAX = 100


def require_object(data: Any) -> dict[str, Any]:
    """The request body as a dict, or ValidationFailed when it is another JSON type."""
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return data


def get_str(data: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    """A string field; missing -> error if required; any other JSON type -> error."""
    value = data.get(field)
    if value is None:
        if required:
            raise ValidationFailed(f"{field} is required.", field=field)
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a string.", field=field)
    return value


def require_str(data: dict[str, Any], field: str) -> str:
    """A required string field."""
    value = get_str(data, field)
    assert value is not None
    return value


def get_int(
    data: dict[str, Any],
    field: str,
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    """An integer field within bounds (booleans are not integers here)."""
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # query arguments arrive as strings
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{field} must be an integer.", field=field)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValidationFailed(f"{field} must be {bound}.", field=field)
    return value


def get_limit(data: dict[str, Any], default: int = 50) -> int:
    """A page size between 1 and PAGE_MAX."""
    value = get_int(data, "limit", default=default, minimum=1, maximum=PAGE_MAX)
    assert value is not None
    return value


def require_id(data: dict[str, Any], field: str) -> str:
    """An opaque id string: non-empty, short, no whitespace."""
    value = require_str(data, field)
    return check_id(value, field)


def check_id(value: str, field: str) -> str:
    """Reject what cannot be an id of ours before it reaches the database."""
    if not value or len(value) > ID_MAX or not value.isascii() or not value.isalnum():
        raise ValidationFailed(f"{field} is not a valid id.", field=field)
    return value


def get_id_list(data: dict[str, Any], field: str, *, max_items: int) -> list[str]:
    """A list of distinct ids, in the order given."""
    value = data.get(field, [])
    if not isinstance(value, list):
        raise ValidationFailed(f"{field} must be a list of ids.", field=field)
    if len(value) > max_items:
        raise ValidationFailed(f"{field} has more than {max_items} items.", field=field)
    ids: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValidationFailed(f"{field} must be a list of ids.", field=field)
        check_id(item, field)
        if item not in ids:
            ids.append(item)
    return ids


def check_username(value: str) -> str:
    """3-32 characters of A-Z a-z 0-9 _ . -"""
    if len(value) < USERNAME_MIN:
        raise ValidationFailed(
            f"Username must be at least {USERNAME_MIN} characters.", field="username"
        )
    if len(value) > USERNAME_MAX:
        raise ValidationFailed(
            f"Username must be at most {USERNAME_MAX} characters.", field="username"
        )
    if not USERNAME_RE.fullmatch(value):
        raise ValidationFailed(
            "Username may contain only letters, digits, '_', '.' and '-'.", field="username"
        )
    return value


def check_email(value: str) -> str:
    """A syntactically valid address, trimmed."""
    value = value.strip()
    if len(value) > EMAIL_MAX or not EMAIL_RE.fullmatch(value):
        raise ValidationFailed("Email address is not valid.", field="email")
    return value


def check_password(value: str) -> str:
    """8-72 bytes of UTF-8; never silently truncated."""
    size = len(value.encode("utf-8"))
    if size < PASSWORD_MIN_BYTES:
        raise ValidationFailed(
            f"Password must be at least {PASSWORD_MIN_BYTES} bytes.", field="password"
        )
    if size > PASSWORD_MAX_BYTES:
        raise ValidationFailed(
            f"Password must be at most {PASSWORD_MAX_BYTES} bytes (bcrypt's limit).",
            field="password",
        )
    return value


def check_body(value: str) -> str:
    """1-4000 characters after trimming; the trimmed text is what is stored."""
    value = value.strip()
    if not value:
        raise ValidationFailed("Message must not be empty.", field="body")
    if len(value) > BODY_MAX_CHARS:
        raise ValidationFailed(
            f"Message must be at most {BODY_MAX_CHARS} characters.", field="body"
        )
    return value


def check_group_name(value: str) -> str:
    """1-64 characters after trimming."""
    value = value.strip()
    if not value:
        raise ValidationFailed("Group name must not be empty.", field="name")
    if len(value) > GROUP_NAME_MAX:
        raise ValidationFailed(
            f"Group name must be at most {GROUP_NAME_MAX} characters.", field="name"
        )
    return value


def check_client_msg_id(value: str) -> str:
    """The sender's idempotency key: 1-64 printable ASCII characters."""
    if (
        not value
        or len(value) > CLIENT_MSG_ID_MAX
        or not value.isascii()
        or not value.isprintable()
    ):
        raise ValidationFailed(
            f"client_msg_id must be 1-{CLIENT_MSG_ID_MAX} printable ASCII characters.",
            field="client_msg_id",
        )
    return value


@dataclasses.dataclass(frozen=True)
class RegisterInput:
    username: str
    email: str
    password: str


@dataclasses.dataclass(frozen=True)
class LoginInput:
    login: str
    password: str


def parse_register(data: Any) -> RegisterInput:
    """auth.register's fields, each checked against the contract's limits."""
    data = require_object(data)
    return RegisterInput(
        username=check_username(require_str(data, "username")),
        email=check_email(require_str(data, "email")),
        password=check_password(require_str(data, "password")),
    )


def parse_login(data: Any) -> LoginInput:
    """auth.login's fields: a username or email, and a password."""
    data = require_object(data)
    login = require_str(data, "login").strip()
    if not login:
        raise ValidationFailed("login is required.", field="login")
    password = require_str(data, "password")
    if not password:
        raise ValidationFailed("password is required.", field="password")
    return LoginInput(login=login, password=password)
