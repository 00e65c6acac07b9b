"""Which network addresses the server may reach on a user's behalf (attachment links).

A link a user gives is fetched by a worker inside the operator's network: unchecked, it would reach
loopback services, the cloud metadata endpoint or the intranet. Only globally routable unicast
addresses pass. IPv6 forms that carry an IPv4 address (NAT64, 6to4, IPv4-compatible) are refused
outright, since the network may deliver them to that IPv4 address; an IPv4-mapped address is judged
by the IPv4 address it maps.

Host names are judged by what they resolve to, at the moment of connecting (see
``mailroom.sending.attachments``); literal addresses can be judged as soon as a link is given,
including the decimal, octal and hex IPv4 spellings (``2130706433``, ``0x7f.1``) that resolvers accept.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import httpx

IPAddress = IPv4Address | IPv6Address

_CGNAT = ip_network("100.64.0.0/10")
_IPV4_CARRIERS = (
    ip_network("::/96"),  # IPv4-compatible (deprecated), and :: and ::1
    ip_network("64:ff9b::/96"),  # NAT64, well-known prefix
    ip_network("64:ff9b:1::/48"),  # NAT64, local-use prefix
    ip_network("2002::/16"),  # 6to4
)
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def refused(address: IPAddress) -> bool:
    """True unless the address is a globally routable unicast address."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return refused(address.ipv4_mapped)
        if any(address in network for network in _IPV4_CARRIERS) or address.is_site_local:
            return True
    elif address in _CGNAT:
        return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _inet_aton(host: str) -> IPv4Address | None:
    """An IPv4 address in any form inet_aton reads: 1 to 4 dot-separated decimal, 0-octal or 0x-hex
    numbers, the last filling the remaining bytes (``127.1`` is 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    numbers = [
        int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p.startswith("0") else 10) for p in parts
    ]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP literal stands for; None for a host name."""
    host = host.strip("[]").rstrip(".")
    try:
        return ip_address(host)
    except ValueError:
        return _inet_aton(host)


def link_problem(url: str, *, allow_private: bool) -> str | None:
    """Why the server must not fetch ``url``, judged without network I/O; None when it may try.

    The URL is read by the same parser the fetch uses (httpx), so the host judged here is the host
    that would be resolved and connected to.
    """
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, UnicodeError):
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https"):
        return "must be an http or https URL"
    host = parsed.raw_host.decode("ascii", "replace")
    if not host:
        return "must name a host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return "has a port out of range"
    if allow_private:
        return None
    address = literal_address(host)
    name = host.rstrip(".").lower()
    # RFC 6761: localhost names never leave the machine, whatever a resolver would say.
    local = name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")
    if local or (address is not None and refused(address)):
        return "must not point to a private, loopback or reserved address"
    return None


__all__ = ["IPAddress", "link_problem", "literal_address", "refused"]
