"""Which addresses a callback may reach: public unicast ones only (pure rules, no I/O).

A callback URL names a host in some spelling; what matters is the address a connection
would reach. `literal_ip` reads every spelling of an address that URL parsers and
`inet_aton` accept (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short `127.1`,
bracketed IPv6, trailing dots); `refusal` says why an address is off limits, looking
through IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64, Teredo).
"""
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Checked in order; the first match names the reason. Python's is_global / is_private do not
# cover multicast and differ between versions, so the ranges are spelled out here.
V4_RANGES: list[tuple[IPv4Network, str]] = [
    (IPv4Network("0.0.0.0/8"), "unspecified"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("10.0.0.0/8"), "private"),
    (IPv4Network("172.16.0.0/12"), "private"),
    (IPv4Network("192.168.0.0/16"), "private"),
    (IPv4Network("100.64.0.0/10"), "shared (CGNAT)"),
    (IPv4Network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved"),  # 255.255.255.255 too
]
V6_RANGES: list[tuple[IPv6Network, str]] = [
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    (IPv6Network("fc00::/7"), "private (unique local)"),
    (IPv6Network("fec0::/10"), "private (site-local)"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("ff00::/8"), "multicast"),
    (IPv6Network("64:ff9b:1::/48"), "private (local NAT64)"),
]
IPV4_COMPATIBLE = IPv6Network("::/96")
NAT64 = IPv6Network("64:ff9b::/96")

_HEX = re.compile(r"0x[0-9a-f]*")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # a leading 0 means octal: "09" is no number


def bare_host(host: str) -> str:
    """The host without brackets, trailing dots, case or an IPv6 zone."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.rstrip(".").split("%", 1)[0]


def _number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DECIMAL.fullmatch(part):
        return int(part)
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address `host` spells out, or None when it is a name (to be resolved)."""
    text = bare_host(host)
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            return None
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):  # type: ignore[operator]
        return None
    value = 0
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))  # type: ignore[operator]
    return IPv4Address(value | last)  # type: ignore[operator]


def local_name(host: str) -> bool:
    """`localhost` and its subdomains always mean this machine (RFC 6761)."""
    name = bare_host(host)
    return name == "localhost" or name.endswith(".localhost")


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries, where one reaches it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why a callback may not reach `ip` (e.g. "loopback"); None for a public unicast address."""
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = refusal(inner)
            return f"{reason} ({inner} inside {ip})" if reason else None
        ranges: list = V6_RANGES
    else:
        ranges = V4_RANGES
    for network, reason in ranges:
        if ip in network:
            return reason
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "reserved"  # documentation, benchmarking, protocol assignments …
    return None
