"""Outbound connections made on a client's behalf (job webhooks): public addresses only, unless allow-listed.

A client-supplied URL is a server-side request forgery risk: `http://127.0.0.1:6379/`, a cloud metadata endpoint
(`169.254.169.254`), a database on the private network. So a webhook target is checked by what its host
*resolves to*, never by how it is spelled: `2130706433`, `0x7f.1`, `localhost.` and `[::ffff:127.0.0.1]` all
resolve (getaddrinfo applies the inet_aton rules) to loopback. Every address of the answer must be public (an
attacker controls the DNS of their own name and can mix in one private address); otherwise the URL is refused
(`BadRequestError`, HTTP 400) with one message that says nothing about which address, or whether the name
resolved at all (no oracle for internal DNS).

The delivery then connects to an address that was checked (`ResolvedTarget.addresses`), sending the original
`Host` header and, for https, the original name as SNI and for the certificate check; it re-resolves and
re-checks before every attempt, so DNS rebinding between the check and the connection reaches nothing.

Allow-list (`IMGSERVE_WEBHOOK_ALLOW`, comma-separated), for receivers on the private network or on this host:

- `10.0.0.0/8`, `fd00::/8`, `127.0.0.1`, `::1`: addresses (CIDR, or a single address) allowed on any port;
- `127.0.0.1:8080`, `[::1]:8080`: one address, one port;
- `hooks.internal`, `hooks.internal:8443`: a host *name* exactly as the URL spells it (case and a trailing dot
  aside), any or one port, whatever it resolves to: its DNS is trusted, so name only names you control.
"""

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from serving.errors import BadRequestError

logger = logging.getLogger("imgserve.security")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSED = "webhook_url refused: resolves to a non-public address"
# IPv6 forms that carry an IPv4 address which a translator or relay would reach: NAT64 (RFC 6052, RFC 8215),
# IPv4-translated (RFC 2765), IPv4-compatible (deprecated). IPv4-mapped, 6to4 and Teredo have accessors.
_EMBEDDING_V4 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96"))
# Not globally reachable (IANA special-purpose registries) but not in every Python's `is_global` list.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(n) for n in ("192.0.0.0/24", "100.64.0.0/10", "198.18.0.0/15", "3fff::/20", "5f00::/16")
)
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def is_public(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address, judged by what it actually reaches.

    `is_global` alone is not enough on every Python: multicast and site-local count as global, and before
    3.11.10/3.12.4 IPv4-mapped addresses were not judged by their IPv4 part.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        embedded: list[ipaddress.IPv4Address | None] = [ip.sixtofour, *(ip.teredo or ())]
        if any(ip in net for net in _EMBEDDING_V4):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not is_public(v4) for v4 in embedded) or ip.is_site_local:
            return False
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    if special or ip.is_reserved or ip.is_unspecified or any(ip in net for net in _NOT_GLOBAL):
        return False
    return ip.is_global


def _plain(ip: IPAddress) -> IPAddress:
    """The address without an IPv6 zone, IPv4-mapped addresses as IPv4 (for allow-list matching)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ipaddress.IPv6Address(int(ip))
    return ip


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a network (addresses) or a host name, on one port or any (`port` None)."""

    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "AllowEntry":
        entry = text.strip()
        try:
            return cls(network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            pass
        name, port = entry, None
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?", entry)
        if bracketed:
            name, port = bracketed.group(1), int(bracketed.group(2)) if bracketed.group(2) else None
        elif re.fullmatch(r"[^:]+:\d{1,5}", entry):
            name, _, digits = entry.rpartition(":")
            port = int(digits)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"allow-list entry {text!r}: port out of range")
        try:
            return cls(network=ipaddress.ip_network(name, strict=False), port=port)
        except ValueError:
            pass
        host = normalize_host(name)
        if bracketed or not _HOST_NAME.fullmatch(host):
            raise ValueError(f"allow-list entry {text!r} is not a CIDR, an address, a host name or host:port")
        return cls(host=host, port=port)

    def permits(self, host: str, port: int, ip: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == normalize_host(host)
        assert self.network is not None
        plain = _plain(ip)
        return plain.version == self.network.version and plain in self.network


@dataclass(frozen=True)
class EgressAllowList:
    """Targets that may resolve to non-public addresses (see the module doc for the entry format)."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None) -> "EgressAllowList":
        """From `IMGSERVE_WEBHOOK_ALLOW` (comma-separated) or a list of entries; ValueError on a bad entry."""
        parts = spec.split(",") if isinstance(spec, str) else list(spec or ())
        return cls(tuple(AllowEntry.parse(p) for p in parts if p.strip()))

    def permits(self, host: str, port: int, ip: IPAddress) -> bool:
        return any(entry.permits(host, port, ip) for entry in self.entries)


@dataclass(frozen=True)
class ResolvedTarget:
    """A checked webhook URL and the addresses it may be delivered to (all of them checked)."""

    url: str
    scheme: str
    host: str  # as the URL spells it, IDNA-encoded, without IPv6 brackets
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The `Host` header a plain request to `url` would send."""
        return httpx.URL(self.url).netloc.decode("ascii")

    @property
    def server_name(self) -> str:
        """The TLS server name (SNI, and the name the certificate must carry)."""
        return self.host.rstrip(".")

    def pinned_url(self, address: str) -> httpx.URL:
        """`url` with its host replaced by one checked address: the connection goes there and nowhere else."""
        return httpx.URL(self.url).copy_with(host=address.split("%", 1)[0])


def resolve(host: str, port: int) -> list[str]:
    """Every TCP address `host` resolves to, in the resolver's order, without duplicates."""
    addresses: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def check_webhook_url(url: str, allow: EgressAllowList, resolver: Resolver | None = None) -> ResolvedTarget:
    """The URL's checked target, or BadRequestError (HTTP 400). Blocking: resolves the host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise BadRequestError("webhook_url is not a valid URL") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise BadRequestError("webhook_url must be an http(s) URL")
    if parsed.userinfo:
        raise BadRequestError("webhook_url must not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise BadRequestError("webhook_url has no host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:  # :0 was checked as the scheme's default port
        raise BadRequestError("webhook_url's port must be 1-65535")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    try:
        found = (resolver or resolve)(host, port)
        ips = [ipaddress.ip_address(a) for a in found]
    except (OSError, UnicodeError, ValueError) as exc:
        logger.info("webhook target %r refused: cannot resolve (%s)", host, exc)
        raise BadRequestError(REFUSED) from None
    if not ips:
        logger.info("webhook target %r refused: no addresses", host)
        raise BadRequestError(REFUSED)
    refused = [ip for ip in ips if not is_public(ip) and not allow.permits(host, port, ip)]
    if refused:
        logger.info("webhook target %r port %d refused: resolves to %s", host, port, ", ".join(map(str, refused)))
        raise BadRequestError(REFUSED)
    return ResolvedTarget(url, parsed.scheme, host, port, tuple(str(ip) for ip in ips))
