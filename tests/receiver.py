"""A real HTTP server on 127.0.0.1 that records webhook deliveries (for callback tests)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next status of `statuses` (then 200), records it; a 3xx
    answer carries `Location: location`."""

    statuses: list[int] = field(default_factory=list)
    location: str = "/elsewhere"
    deliveries: list[Delivery] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None
    port: int = 0
    writers: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> "Receiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):  # keep-alive connections of the sender
                writer.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.deliveries.append(Delivery(path, headers, body))
                status = self.statuses.pop(0) if self.statuses else 200
                extra = f"location: {self.location}\r\n" if 300 <= status < 400 else ""
                writer.write(f"HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.deliveries) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} deliveries, got {len(self.deliveries)}")
            await asyncio.sleep(0.02)
        return self.deliveries
