"""The gateway's outbound connections (image URLs, MCP servers) and the one SSRF rule they share:
a host that resolves to a private, loopback, link-local or otherwise non-public address is refused
unless the gateway's ``url_allow_list`` (``smg serve --allow-url-host``) names the host or a
network holding the address."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable


class BlockedAddress(ValueError):
    """A host the allow-list does not open resolves to a non-public address (or does not resolve)."""


class AllowList:
    """``url_allow_list``: host names, and addresses or networks in CIDR form."""

    __slots__ = ("entries", "_networks", "_hosts")

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(entries)
        networks, hosts = [], set()
        for entry in self.entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        self._networks = tuple(networks)
        self._hosts = frozenset(hosts)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._hosts

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in self._networks):
            return True
        return ip.is_global and not ip.is_multicast

    async def checked_address(self, host: str, port: int) -> str | None:
        """The address to connect to, once every address ``host`` resolves to passed; None when
        the allow-list names the host itself (then it is connected to by name)."""
        if self.host_allowed(host):
            return None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise BlockedAddress(f"cannot resolve {host}: {exc}") from None
        addresses = [info[4][0].split("%")[0] for info in infos]
        for address in addresses:
            if not self.address_allowed(address):
                raise BlockedAddress(f"{host} resolves to {address}, a private, loopback or link-local address; "
                                     f"add it to url_allow_list (smg serve --allow-url-host) to connect to it")
        return addresses[0]
