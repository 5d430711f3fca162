"""Who the client is, as far as the connection tells (never from forwarded headers: any
client can send those)."""

from __future__ import annotations

import ipaddress


def is_loopback(remote: str | None) -> bool:
    """Is ``remote`` (``request.remote``: the peer's address) this machine's loopback?
    IPv4-mapped IPv6 (``::ffff:127.0.0.1``) counts; no address (a Unix socket) does not."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
