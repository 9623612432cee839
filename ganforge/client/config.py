"""Where the SDK connects and as whom: arguments first, then GANFORGE_URL / GANFORGE_API_KEY, then the defaults.

Settings are checked when a client is built, each refusal a `ValueError` that names the setting and never echoes a
secret: a base URL that is not http(s) with a host or does not parse (its password masked in the message), an API
key with a character an HTTP header cannot carry (the key itself is not shown), a timeout <= 0, retries < 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "GANFORGE_URL"
KEY_ENV = "GANFORGE_API_KEY"
# An SSE stream is quiet between events; the API pings every 15 s, so a read timeout below that would cut it.
STREAM_READ_TIMEOUT = 60.0
# A host that does not accept a connection within this is down or firewalled; waiting the full read timeout to
# find that out only delays the retry.
CONNECT_TIMEOUT = 5.0
# Visible ASCII only: a header value cannot carry CR/LF (header injection) or non-ASCII, and h11 refuses spaces at
# its ends; API keys are tokens.
_KEY = re.compile(r"[\x21-\x7e]+")


def _password(url: str) -> str:
    _, sep, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if sep else ""
    return userinfo.partition(":")[2]


def mask_url(url: str) -> str:
    """`url` fit for a message: a password in it replaced by ***, e.g. `http://bob:***@host` (works on URLs that do
    not parse too, so the message that refuses one does not leak it)."""
    head, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")  # an "@" in the path is not user info
    if not sep or "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")  # the last "@": a password may hold one
    user, colon, _ = userinfo.partition(":")
    return f"{head}://{user}:***@{host}{slash}{path}" if colon else url


def _version() -> str:
    try:
        return metadata.version("ganforge")
    except metadata.PackageNotFoundError:
        return "0"


def check_url(url: str, setting: str = "base_url") -> str:
    """`url` without a trailing slash; ValueError (naming `setting`, the password masked) unless it is an http:// or
    https:// URL with a host, without query or fragment."""
    shown = mask_url(url)
    try:
        parsed = httpx.URL(url)
        bad_port = parsed.port is not None and not 0 < parsed.port < 65536
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        reason = str(exc)
        password = _password(url)
        if password:  # httpx's reason may quote a piece of the URL
            reason = reason.replace(password, "***")
        raise ValueError(f"{setting} is not a valid URL ({reason}): {shown!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or any(c.isspace() for c in url):
        raise ValueError(f"{setting} must be an http:// or https:// URL with a host, got {shown!r}")
    if bad_port:
        raise ValueError(f"{setting} has a port outside 1-65535, got {shown!r}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{setting} must not have a query or fragment, got {shown!r}")
    return url


def check_key(key: str, setting: str = "api_key") -> str:
    """`key` when a header can carry it; ValueError otherwise (without the key: it is a secret)."""
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"the API key ({setting}) contains characters a header cannot carry "
            "(only visible ASCII: no spaces, line breaks or control characters)"
        )
    return key


@dataclass(frozen=True)
class Config:
    """The resolved settings of one client: base URL (no trailing slash), API key or None, timeout (s), retries."""

    base_url: str
    api_key: str | None
    timeout: float
    retries: int

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, timeout: float, retries: int) -> Config:
        """Settings from the arguments, else the environment, else the defaults.

        Raises ValueError (see the module) on a bad URL, key or number.
        """
        url_setting = "base_url" if base_url else URL_ENV if os.environ.get(URL_ENV) else "base_url"
        url = check_url((base_url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/"), url_setting)
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        if key:
            check_key(key, "api_key" if api_key is not None else KEY_ENV)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        return cls(base_url=url, api_key=key or None, timeout=timeout, retries=retries)

    @property
    def shown_url(self) -> str:
        """The base URL for messages: its password, if any, masked."""
        return mask_url(self.base_url)

    def headers(self) -> dict[str, str]:
        """Headers every request carries: the bearer key (when there is one) and the SDK's user agent."""
        headers = {"User-Agent": f"ganforge-client/{_version()}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request_timeout(self) -> httpx.Timeout:
        """Timeouts of a request: connecting at most 5 s (or `timeout` when shorter), reading and writing `timeout`."""
        return httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout))

    def stream_timeout(self) -> httpx.Timeout:
        """Timeouts for an SSE stream: as `request_timeout`, reads long enough to span the pings."""
        return httpx.Timeout(
            self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout), read=max(self.timeout, STREAM_READ_TIMEOUT)
        )
