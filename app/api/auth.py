"""Who is calling, and what they may do: API keys with scopes and tenants.

Scopes: `read` (read the tenant's batches), `produce` (create, add jobs, cancel, retry, and
read), `work` (claim, start, heartbeat, report; optionally only some queues), `admin`
(everything, every tenant). No key or an unknown key is a 401 with WWW-Authenticate; a key
without the scope an operation needs is a 403. With no keys configured the API is open and
every caller is an admin of the tenant "default" (the embedded default).
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import ApiKey, Settings
from app.domain.errors import Forbidden, Unauthorized
from app.telemetry.logs import bind

IMPLIED = {"produce": {"produce", "read"}, "read": {"read"}, "work": {"work"}, "admin": {"produce", "read", "work", "admin"}}


@dataclass(frozen=True)
class Caller:
    tenant: str
    scopes: frozenset[str]
    queues: frozenset[str] | None = None  # a `work` key limited to these queues
    name: str | None = None

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def sees(self) -> str | None:
        """The tenant whose batches this caller sees (None: every tenant)."""
        return None if self.admin else self.tenant

    def may_work(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues


OPEN = Caller(tenant="default", scopes=frozenset(IMPLIED["admin"]))


def configured_keys(settings: Settings) -> list[ApiKey]:
    keys = list(settings.api_keys)
    if settings.api_token:
        keys.append(ApiKey(key_sha256=hashlib.sha256(settings.api_token.encode()).hexdigest(), scopes=["admin"], name="api_token"))
    return keys


def authenticate(request: Request) -> Caller:
    """The caller behind the request's bearer key (compared in constant time with every key)."""
    keys: list[ApiKey] = request.app.state.api_keys
    if not keys:
        return OPEN
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("this API needs a key: Authorization: Bearer <key>")
    digest = hashlib.sha256(presented.strip().encode()).hexdigest()
    found = None
    for key in keys:  # no early exit: the time taken does not tell which key was close
        if hmac.compare_digest(digest, key.digest):
            found = key
    if found is None:
        raise Unauthorized("unknown API key")
    scopes = frozenset(s for scope in found.scopes for s in IMPLIED[scope])
    return Caller(found.tenant, scopes, frozenset(found.queues) if found.queues is not None else None, found.name)


# Declares the bearer scheme in the OpenAPI document; the key itself is checked below.
bearer = HTTPBearer(auto_error=False, description="An API key (BATCHQ_API_KEYS); not needed when none is configured.")


def require(scope: str):  # noqa: ANN201
    """A dependency: the caller, who must hold `scope` (admin holds every scope)."""

    async def check(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> Caller:
        caller = authenticate(request)
        if scope not in caller.scopes:
            raise Forbidden(f"this key lacks the `{scope}` scope")
        request.state.caller = caller
        bind(tenant=caller.tenant)  # on the request's log lines
        return caller

    check.__name__ = f"require_{scope}"
    return Depends(check)


async def any_key(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> Caller:
    caller = authenticate(request)
    request.state.caller = caller
    bind(tenant=caller.tenant)
    return caller
