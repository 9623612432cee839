"""Webhooks' domain (issue 13): the event kinds, the endpoint secret, and the URL guard against server-side request
forgery.

A webhook URL is refused when it is not http(s), carries credentials, or its host resolves to an address that is
not public: loopback, private, link-local, multicast, reserved or unspecified, IPv4 or IPv6, an IPv4 address inside
an IPv6 one (IPv4-mapped `::ffff:a.b.c.d`, 6to4, NAT64) judged as that IPv4 address. GANFORGE_WEBHOOK_ALLOWED_HOSTS
names host names or networks (CIDR) allowed anyway. The guard runs when an endpoint is created and again at every
send, where the connection goes to the very address that was checked (api/webhooks.py), so a name that resolves
to a public address at creation and to 127.0.0.1 later (DNS rebinding) reaches nothing.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

# The event kinds an endpoint may ask for.
JOB_STATUS = "job.status"  # every status change of a job (submitted, claimed, finished, re-queued, cancelled)
JOB_CHECKPOINT = "job.checkpoint"  # a new checkpoint of a job
STUDY_FINISHED = "study.finished"  # a study's last job reached a final status
EVENT_KINDS = (JOB_STATUS, JOB_CHECKPOINT, STUDY_FINISHED)
# The job event kinds (records.JobEvent.kind) that make webhook events; metrics, samples, alerts make none.
SOURCE_KINDS = {"status": JOB_STATUS, "checkpoint": JOB_CHECKPOINT}

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})?")


class UrlRefused(ValueError):
    """A webhook URL the guard refuses; the message says why (for the 422's `url` detail and the delivery log)."""


def new_secret() -> str:
    """A new endpoint secret in the Standard Webhooks form: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_event_id() -> str:
    """A new event id `msg_<32 hex>`: the `webhook-id` of every attempt and redelivery of one event."""
    return "msg_" + secrets.token_hex(16)


def check_allowed_host(entry: str) -> None:
    """Raise ValueError unless `entry` is a host name, an IP address or a CIDR network (one of
    GANFORGE_WEBHOOK_ALLOWED_HOSTS' entries)."""
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"GANFORGE_WEBHOOK_ALLOWED_HOSTS: {entry!r} is not a network (CIDR such as 10.0.0.0/8)"
            ) from None
        return
    if not (_is_ip(entry.strip("[]")) or _HOST_NAME.fullmatch(entry)):
        raise ValueError(f"GANFORGE_WEBHOOK_ALLOWED_HOSTS: {entry!r} is neither a host name nor an address")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which webhook hosts and addresses may be reached: public addresses, and what `allowed` names (host names,
    compared without case, and networks; a bare address is a one-address network)."""

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in allowed:
            text = entry.strip().strip("[]")
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self.names.add(text.lower().rstrip("."))

    def name_allowed(self, host: str) -> bool:
        """Whether `host` is a name the operator allowed (every address it resolves to may then be reached)."""
        return host.lower().rstrip(".") in self.names

    def address_problem(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        if any(address in network for network in self.networks if network.version == address.version):
            return None
        inner = _embedded_ipv4(address)
        if inner is not None:
            if any(inner in network for network in self.networks if network.version == 4):
                return None
            problem = _not_public(inner)
            return f"an IPv6 address holding {inner}, {problem}" if problem else None
        return _not_public(address)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses `host` resolves to that may be reached; raises UrlRefused when it does not resolve or any
        of its addresses may not be reached (all or none: which one a client would use is not known)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlRefused(f"the host {host!r} does not resolve ({exc})") from None
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise UrlRefused(f"the host {host!r} resolves to no address")
        if self.name_allowed(host):
            return addresses
        for address in addresses:
            problem = self.address_problem(address)
            if problem:
                shown = host if _is_ip(host) else f"{host} ({address})"
                raise UrlRefused(
                    f"{shown} is {problem}: webhooks reach public addresses only "
                    "(GANFORGE_WEBHOOK_ALLOWED_HOSTS can allow it)"
                )
        return addresses

    def check_url(self, url: str) -> tuple[str, int]:
        """The (host, port) of `url` when a webhook may be sent to it now; raises UrlRefused saying why not:
        not http/https, credentials in it, no host, or a host refused by `resolve`."""
        host, port = url_target(url)
        self.resolve(host, port)
        return host, port


def url_target(url: str) -> tuple[str, int]:
    """The (host, port) of an http(s) `url` without credentials; raises UrlRefused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("a URL may not carry credentials (user:password@): authenticate with the signature")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _not_public(address: IPAddress) -> str | None:
    for word, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{'an' if word[0] in 'aeiou' else 'a'} {word} address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), else None."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
