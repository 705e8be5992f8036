"""Where a callback URL leads: its host resolved, and refused unless every address is public.

Used twice: when a batch is created (its callback URLs) and by the webhook sender each time
it connects (app.dispatch.guarded_transport), so that a name that resolved to a public
address at creation and to an inside one later (DNS rebinding) is still refused.

Names are resolved with the system resolver (getaddrinfo) in a small thread pool of its own,
under a timeout, so a slow DNS server neither blocks the event loop nor starves the threads
other work uses.
"""
from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from ipaddress import ip_address

from app.domain.addresses import IPAddress, bare_host, literal_ip, local_name, refusal

DNS_TIMEOUT_S = 3.0  # at creation; the sender uses its connect timeout
_RESOLVERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="batchq-dns")
RULE = "callbacks may reach public addresses only (BATCHQ_ALLOW_PRIVATE_CALLBACKS lifts this)"


class Refused(Exception):
    """A callback host that may not be reached, or that does not resolve; the message says why."""


async def resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """The addresses `host` stands for, in the resolver's order."""
    literal = literal_ip(host)
    if literal is not None:
        return [literal]
    name = bare_host(host)
    lookup = partial(socket.getaddrinfo, name, port, type=socket.SOCK_STREAM)
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_RESOLVERS, lookup), timeout_s)
    except asyncio.TimeoutError:
        raise Refused(f"{name} did not resolve within {timeout_s:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"{name} does not resolve ({exc})") from None
    found: dict[IPAddress, None] = {}
    for *_, sockaddr in infos:
        found[ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    if not found:
        raise Refused(f"{name} does not resolve")
    return list(found)


async def vet(host: str, port: int, allow_private: bool, timeout_s: float = DNS_TIMEOUT_S) -> list[IPAddress]:
    """The addresses of `host`, all allowed; Refused names the first that is not.

    With allow_private the address rule is lifted (the host must still resolve).
    """
    if not allow_private and local_name(host):
        raise Refused(f"{bare_host(host)} is this machine (loopback); {RULE}")
    addresses = await resolve(host, port, timeout_s)
    if allow_private:
        return addresses
    for ip in addresses:
        reason = refusal(ip)
        if reason is not None:
            named = "" if literal_ip(host) is not None else f"{bare_host(host)} resolves to "
            raise Refused(f"{named}{ip} is a {reason} address; {RULE}")
    return addresses
