"""Which addresses a callback may reach, in every spelling of them (app.domain.addresses)."""
from __future__ import annotations

from ipaddress import ip_address

import pytest

from app.domain.addresses import literal_ip, local_name, refusal


@pytest.mark.parametrize(
    "host, address",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # one decimal number
        ("017700000001", "127.0.0.1"),  # one octal number
        ("0x7f000001", "127.0.0.1"),  # one hex number
        ("0177.0.0.1", "127.0.0.1"),  # octal parts
        ("0x7f.1", "127.0.0.1"),  # hex, short form
        ("127.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("169.254.43518", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[FE80::1%25eth0]", "fe80::1"),  # zone id, upper case
        ("0", "0.0.0.0"),
    ],
)
def test_every_spelling_of_an_address_is_read(host, address):
    assert literal_ip(host) == ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.0.0.1", "1.256.0.0x1g", "0x1.2.3.4.5", "09.1.1.1", "1e3", "a.1"])
def test_names_are_left_to_the_resolver(host):
    assert literal_ip(host) is None


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private (unique local)"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("233.252.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("2001:db8::1", "reserved"),  # documentation
        ("::ffff:127.0.0.1", "loopback (127.0.0.1 inside ::ffff:7f00:1)"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local (cloud metadata) (169.254.169.254 inside ::ffff:a9fe:a9fe)"),
        ("::127.0.0.1", "loopback (127.0.0.1 inside ::7f00:1)"),  # IPv4-compatible
        ("2002:a00:1::", "private (10.0.0.1 inside 2002:a00:1::)"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata) (169.254.169.254 inside 64:ff9b::a9fe:a9fe)"),  # NAT64
    ],
)
def test_inside_addresses_are_refused_with_their_reason(address, reason):
    assert refusal(ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])  # fmt: skip
def test_public_unicast_addresses_are_allowed(address):
    assert refusal(ip_address(address)) is None


@pytest.mark.parametrize("host, local", [("localhost", True), ("LOCALHOST.", True), ("a.b.localhost", True),
                                         ("[localhost]", True), ("localhost.com", False), ("mylocalhost", False)])  # fmt: skip
def test_localhost_names_are_this_machine(host, local):
    assert local_name(host) is local
