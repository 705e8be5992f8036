"""An httpx transport that connects only where a callback may go.

Every new connection resolves the URL's host itself, checks every address it got
(app.services.callback_guard.vet) and then connects to one of those very addresses: what
was checked is what is reached, whatever the DNS answers a moment later (rebinding). The
URL keeps the name, so the Host header, TLS SNI and certificate checks are the name's.
A refusal raises callback_guard.Refused before any byte is sent. No proxy from the
environment is used (it would connect elsewhere), and redirects are the client's to follow:
the sender does not.
"""
from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx

from app.services.callback_guard import DNS_TIMEOUT_S, Refused, vet

BODY_KEPT = 64 * 1024  # a reply body is read (and dropped) up to this, so the connection can be reused


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allow_private: bool):
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await vet(host, port, self.allow_private, timeout or DNS_TIMEOUT_S)
        error: Exception | None = None
        for ip in addresses:  # in the resolver's order, as a browser would
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise Refused("callbacks do not go to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, allow_private: bool):
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(allow_private),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        reply = await self.pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
                headers=request.headers.raw,
                content=request.stream,  # type: ignore[arg-type]
                extensions=request.extensions,
            )
        )
        try:  # the status is what counts: the body is drained, not kept
            read = 0
            async for chunk in reply.aiter_stream():
                read += len(chunk)
                if read > BODY_KEPT:
                    break
        finally:
            await reply.aclose()
        return httpx.Response(status_code=reply.status, headers=reply.headers, extensions=reply.extensions, request=request)

    async def aclose(self) -> None:
        await self.pool.aclose()
