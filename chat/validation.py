"""JSON text -> values within the contract's limits, or a BadRequest; raw JSON values -> typed
input, or a ValidationFailed naming the field at fault."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from chat.errors import BadRequest, ValidationFailed

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
# Arrays and objects inside one another, the outermost counting 1. The deepest input the
# contract takes is 2 (a frame with a list of ids); without a limit, a few thousand levels
# exhaust the decoder's recursion.
JSON_MAX_DEPTH = 32
# Integers in JSON and in query strings: what the database stores (BSON's signed 64 bits); no
# id, seq, cursor or count comes near it. Longer digit strings are refused before int() reads
# them (int() of 10,000 digits costs milliseconds; past 4,300 it raises).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
INT_MAX_DIGITS = 19  # len(str(INT_MAX))
# ASCII digits only: int() also reads "1_0" and other scripts' digits (U+0661 is 1 to int()).
INT_TEXT_RE = re.compile(r"[+-]?[0-9]{1,19}")
# JSON text can spell a lone surrogate only as an escape: raw UTF-8 cannot encode one.
SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def _json_int(text: str) -> int:
    value = int(text) if len(text.lstrip("-")) <= INT_MAX_DIGITS else None
    if value is None or not INT_MIN <= value <= INT_MAX:
        raise BadRequest("Integers must fit in 64 bits (at most 19 digits).")
    return value


def _json_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not JSON.")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no JSON reply could carry
        raise BadRequest("Numbers must be finite (1e400 is too large).")
    return value


_DECODER = json.JSONDecoder(
    parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
)


def decode_json(raw: str | bytes, what: str) -> Any:
    """The value of a JSON text (UTF-8 when bytes), or BadRequest naming `what` ("request
    body", "frame") when it is not JSON, nests deeper than JSON_MAX_DEPTH, has an integer
    outside 64 bits, NaN or Infinity, or a string (or key) with a lone surrogate: nothing
    past this point needs to handle input that cannot be stored or encoded."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")  # strict: encoded surrogates are not UTF-8
        except UnicodeDecodeError as exc:
            raise BadRequest(f"The {what} is not valid UTF-8.") from exc
    else:
        text = raw
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The {what} is not valid JSON.") from exc
    except RecursionError as exc:  # thousands deep: the decoder gave up before we could look
        raise BadRequest(f"The {what} nests deeper than {JSON_MAX_DEPTH} levels.") from exc
    # Only a text with that many brackets can nest that deep, and only one with a surrogate
    # escape can hold a lone surrogate: a usual frame skips the walk.
    if text.count("[") + text.count("{") > JSON_MAX_DEPTH or SURROGATE_ESCAPE_RE.search(text):
        _check_decoded(value, 0, what)
    return value


def _check_decoded(value: Any, depth: int, what: str) -> None:
    if isinstance(value, str):
        if SURROGATE_RE.search(value):
            raise BadRequest(
                f"The {what} has a lone surrogate (\\ud800-\\udfff): strings must be Unicode."
            )
        return
    if not isinstance(value, (list, dict)):
        return
    if depth >= JSON_MAX_DEPTH:
        raise BadRequest(f"The {what} nests deeper than {JSON_MAX_DEPTH} levels.")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_decoded(key, depth + 1, what)
            _check_decoded(item, depth + 1, what)
    else:
        for item in value:
            _check_decoded(item, depth + 1, what)


def int_from_text(text: str) -> int | None:
    """The integer a query argument spells in ASCII digits (a sign and surrounding blanks
    allowed), if it fits in 64 bits; None for anything else."""
    text = text.strip()
    if not INT_TEXT_RE.fullmatch(text):
        return None
    value = int(text)
    return value if INT_MIN <= value <= INT_MAX else None


def require_object(data: Any) -> dict[str, Any]:
    """The request body as a dict, or ValidationFailed when it is another JSON type."""
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return data


def get_document(data: dict[str, Any], field: str, *, max_bytes: int) -> dict[str, Any] | None:
    """A client's own object, stored as it is (a game's data, a service's): at most max_bytes
    as JSON, and no key the database cannot keep (a NUL in it, or a leading $, which MongoDB
    reads as an operator). None when absent."""
    value = data.get(field)
    if value is None:
        return None
    problem = f"{field} must be an object of at most {max_bytes} bytes"
    if not isinstance(value, dict) or len(json.dumps(value)) > max_bytes:
        raise ValidationFailed(f"{problem}.", field=field)
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, inner in node.items():
                if "\x00" in key or key.startswith("$"):
                    raise ValidationFailed(
                        f"{problem}, whose keys have no NUL and do not start with $.", field=field
                    )
                stack.append(inner)
    return value


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
    if isinstance(value, str):  # query arguments arrive as strings
        parsed = int_from_text(value)
        if parsed is None:
            raise ValidationFailed(f"{field} must be an integer.", field=field)
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{field} must be an integer.", field=field)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValidationFailed(f"{field} must be {bound}.", field=field)
    return value


def get_flag(data: dict[str, Any], field: str) -> bool:
    """A boolean field, False when absent."""
    value = data.get(field, False)
    if not isinstance(value, bool):
        raise ValidationFailed(f"{field} must be true or false.", field=field)
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


def is_id(value: object) -> bool:
    """Whether value can be an id of ours: a short, non-empty string of ASCII letters and
    digits."""
    return (
        isinstance(value, str) and 0 < len(value) <= ID_MAX and value.isascii() and value.isalnum()
    )


def check_id(value: str, field: str) -> str:
    """Reject what cannot be an id of ours before it reaches the database."""
    if not is_id(value):
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


def check_password(value: str, field: str = "password") -> str:
    """8-72 bytes of UTF-8; never silently truncated."""
    size = len(value.encode("utf-8"))
    if size < PASSWORD_MIN_BYTES:
        raise ValidationFailed(
            f"Password must be at least {PASSWORD_MIN_BYTES} bytes.", field=field
        )
    if size > PASSWORD_MAX_BYTES:
        raise ValidationFailed(
            f"Password must be at most {PASSWORD_MAX_BYTES} bytes (bcrypt's limit).", field=field
        )
    return value


def require_password(data: dict[str, Any], field: str) -> str:
    """A password given to prove who one is: any non-empty string (the rules are for new
    ones: an old password from before a rule must still be accepted)."""
    value = require_str(data, field)
    if not value:
        raise ValidationFailed(f"{field} is required.", field=field)
    return value


def check_body(value: str, *, allow_empty: bool = False) -> str:
    """1-4000 characters after trimming (0-4000 when allow_empty: a message with
    attachments); the trimmed text is what is stored."""
    value = value.strip()
    if not value and not allow_empty:
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
    return LoginInput(login=login, password=require_password(data, "password"))


# -- the same rules as JSON Schema ------------------------------------------------------------
# What each check above accepts, written from the same constants, for the OpenAPI document
# (chat/openapi.py). Commands declare their input with these (`takes=` of @command), so the
# document and the checks change together; the fuzz tests hold them to each other.

Schema = dict[str, Any]

ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": ID_MAX,
    "pattern": "^[A-Za-z0-9]+$",
    "description": "An id: 24 hex digits for users, conversations, messages and requests.",
}
USERNAME: Schema = {
    "type": "string",
    "minLength": USERNAME_MIN,
    "maxLength": USERNAME_MAX,
    "pattern": f"^{USERNAME_RE.pattern}$",
}
EMAIL: Schema = {
    "type": "string",
    "maxLength": EMAIL_MAX,
    "pattern": f"^\\s*{EMAIL_RE.pattern}\\s*$",  # trimmed before it is checked
    "description": "Syntactically valid, unique ignoring case.",
}
PASSWORD: Schema = {
    "type": "string",
    # JSON Schema counts characters, not bytes: the bounds take every password the check
    # takes (8 bytes are at least 2 characters of UTF-8, 72 bytes at most 72 characters);
    # the check refuses the rest of what they let through (400, field password)
    "minLength": PASSWORD_MIN_BYTES // 4,
    "maxLength": PASSWORD_MAX_BYTES,
    "description": f"{PASSWORD_MIN_BYTES}-{PASSWORD_MAX_BYTES} bytes of UTF-8 (bcrypt's limit).",
}
BODY: Schema = {
    "type": "string",
    "maxLength": BODY_MAX_CHARS + 2 * 1024,  # white space at the ends is trimmed first
    "description": f"1-{BODY_MAX_CHARS} characters after trimming white space at both ends.",
}
GROUP_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "description": f"1-{GROUP_NAME_MAX} characters after trimming.",
}
CLIENT_MSG_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": CLIENT_MSG_ID_MAX,
    "pattern": "^[\\x20-\\x7e]+$",
    "description": "The sender's idempotency key: printable ASCII, unique per sender.",
}
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}
NONEMPTY_TEXT: Schema = {"type": "string", "minLength": 1}


def integer(minimum: int = 0, maximum: int = INT_MAX) -> Schema:
    """What get_int takes: an integer within bounds (in a query string, ASCII digits)."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def id_list(max_items: int | None = None) -> Schema:
    """What get_id_list takes (max_items None: a bound set by an option, not a constant)."""
    shown: Schema = {"type": "array", "items": ID}
    if max_items is not None:
        shown["maxItems"] = max_items
    return shown


def one_of(*values: str) -> Schema:
    """A string among these values."""
    return {"type": "string", "enum": list(values)}


@dataclasses.dataclass(frozen=True)
class Fields:
    """A command's input: its fields' schemas and which are required. Over REST, GET and
    DELETE take them from the query string, other methods from the JSON body; path
    parameters are fields too."""

    properties: dict[str, Schema] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()
    rule: Schema = dataclasses.field(default_factory=dict)  # e.g. anyOf: which must be given

    def schema(self, leave_out: frozenset[str] = frozenset()) -> Schema:
        """The JSON Schema of the object, without the fields in leave_out (the path's)."""
        props = {k: v for k, v in self.properties.items() if k not in leave_out}
        shown: Schema = {"type": "object", "properties": props, **self.rule}
        required = [k for k in self.required if k not in leave_out]
        if required:
            shown["required"] = required
        return shown


NO_FIELDS = Fields()
