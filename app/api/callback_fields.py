"""A callback's URL and headers as a request may give them, and the check of where it leads.

Headers are checked when the batch is created, not when a webhook is sent: a header that
could split the request (CR/LF), that is not ASCII, that frames the request (`Host`,
`Content-Length`, `Transfer-Encoding`, hop-by-hop headers) or that would pass for the
service's own signature is refused with a 422 naming it.
"""
from __future__ import annotations

import asyncio
import re
from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, Field, WithJsonSchema

from app.domain.errors import Invalid
from app.services import callback_guard

TOKEN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # RFC 9110 field name
VALUE = r"^[\x20-\x7e]*$"  # visible ASCII and spaces: no CR, LF or other controls
# Set by the sender, about the connection rather than the message, or the signature's own.
RESERVED = {
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
    "trailer", "expect", "proxy-connection", "proxy-authorization",
    "webhook-id", "webhook-timestamp", "webhook-signature",
}  # fmt: skip
OWN_PREFIX = "x-batchq-"


def _name(name: str) -> str:
    if not re.fullmatch(TOKEN, name) or len(name) > 256:
        raise ValueError("a header name is 1 to 256 letters, digits or !#$%&'*+-.^_`|~")
    if name.lower() in RESERVED or name.lower().startswith(OWN_PREFIX):
        raise ValueError(f"`{name}` is set by the webhook sender; it cannot be given")
    return name


def _value(value: str) -> str:
    if not re.fullmatch(VALUE, value) or len(value) > 4096:
        raise ValueError("a header value is up to 4096 printable ASCII characters (no CR, LF or other controls)")
    return value


def _distinct(headers: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name in headers:
        if name.lower() in seen:
            raise ValueError(f"`{name}` is given twice (header names ignore case)")
        seen.add(name.lower())
    return headers


def _few(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > 50:
        raise ValueError("at most 50 headers")
    return headers


# Validated by the functions above (their messages name the header); documented as this schema.
CallbackHeaders = Annotated[
    dict[Annotated[str, AfterValidator(_name)], Annotated[str, AfterValidator(_value)]],
    AfterValidator(_distinct),
    AfterValidator(_few),
    WithJsonSchema({
        "type": "object",
        "maxProperties": 50,
        "propertyNames": {"pattern": TOKEN, "maxLength": 256},
        "additionalProperties": {"type": "string", "pattern": VALUE, "maxLength": 4096},
        "description": "sent with every delivery; not Host, Content-Length, Content-Type, Transfer-Encoding, "
                       "hop-by-hop headers, webhook-id / -timestamp / -signature or X-Batchq-*",
    }),
]


def _no_user_info(url: AnyHttpUrl) -> AnyHttpUrl:
    if url.username is not None or url.password is not None:
        raise ValueError("a callback URL may not carry user info (user:password@); send credentials in `headers`")
    return url


CallbackUrl = Annotated[
    AnyHttpUrl,
    AfterValidator(_no_user_info),
    Field(description="http(s), without user info; its host must be, and resolve to, public addresses only "
                      "(not loopback, private, link-local, CGNAT, multicast or reserved) unless the server "
                      "sets BATCHQ_ALLOW_PRIVATE_CALLBACKS"),
]


async def vet_urls(urls: dict[str, AnyHttpUrl | None], allow_private: bool) -> None:
    """Refuse (422 naming the field) a callback URL whose host is, or resolves to, an address
    inside: loopback, private, link-local, CGNAT, multicast, reserved … or that does not resolve.
    `urls` maps a field (`on_complete.url`) to its URL."""
    if allow_private:
        return  # the rule is lifted; the sender connects wherever the names lead
    given = {field: url for field, url in urls.items() if url is not None}
    outcomes = await asyncio.gather(
        *(callback_guard.vet(u.host or "", u.port or 80, allow_private) for u in given.values()), return_exceptions=True
    )
    for field, outcome in zip(given, outcomes):
        if isinstance(outcome, callback_guard.Refused):
            raise Invalid(f"{field}: {outcome}", field=field)
        if isinstance(outcome, BaseException):
            raise outcome
