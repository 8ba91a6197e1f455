"""URL helpers: the adapter's signing scope, and URLs made safe to print.

Everything the project writes to a log line, an exception message or a repr
goes through :func:`redact_url` first: the query string (where tokens and
signatures hide), the fragment and any ``user:password@`` part are dropped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Prefix", "is_loopback", "redact_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def redact_url(url: str | bytes | None) -> str:
    """Return ``url`` without its query string, fragment and credentials.

    :param url: an absolute URL, or None.
    :return: ``scheme://host[:port]/path``; ``"<no url>"`` for None and
        ``"<unparseable url>"`` when the URL cannot be split. Never raises.
    """
    if url is None:
        return "<no url>"
    if isinstance(url, bytes):
        url = url.decode("latin-1")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if not parts.scheme:
        return parts.path or "/"
    return f"{parts.scheme}://{netloc}{parts.path or '/'}"


def is_loopback(host: str | None) -> bool:
    """Tell whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Prefix:
    """A mount prefix such as ``https://`` or ``https://acme.bloxs.io/api/``.

    requests routes a URL to an adapter by plain string prefix; for deciding
    where credentials may go this class compares scheme, host, port and whole
    path segments instead, so ``https://acme.bloxs.io`` does not match
    ``https://acme.bloxs.io.example.net/`` and ``/api`` does not match
    ``/api-other``.
    """

    raw: str
    scheme: str
    host: str | None
    port: int | None
    path: str

    @classmethod
    def parse(cls, prefix: str) -> Prefix:
        """Validate ``prefix``.

        :raises TypeError: if ``prefix`` is not a string.
        :raises ValueError: if it has no ``http://`` or ``https://`` scheme, or
            carries credentials, a query string or a fragment.
        """
        if not isinstance(prefix, str):
            raise TypeError(
                f"prefix must be a string such as 'https://', not {type(prefix).__name__}"
            )
        try:
            parts = urlsplit(prefix)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"prefix {prefix!r} is not a valid URL prefix: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not prefix.lower().startswith(f"{scheme}://"):
            raise ValueError(
                f"prefix {prefix!r} must start with 'http://' or 'https://' "
                "(for example 'https://' or 'https://acme.bloxs.io/')"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError("prefix must not contain credentials (user:password@)")
        if parts.query or parts.fragment:
            raise ValueError("prefix must not contain a query string or a fragment")
        host = parts.hostname.lower() if parts.hostname else None
        return cls(
            raw=prefix,
            scheme=scheme,
            host=host,
            port=(port or _DEFAULT_PORTS[scheme]) if host else None,
            path=parts.path.rstrip("/"),
        )

    @property
    def names_host(self) -> bool:
        """True when the prefix names a host, not just a scheme."""
        return self.host is not None

    def matches(self, url: str | None) -> bool:
        """Tell whether ``url`` lies under this prefix (scheme, host, port, path)."""
        if not url:
            return False
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        if scheme != self.scheme:
            return False
        if self.host is None:
            return True
        if (parts.hostname or "").lower() != self.host:
            return False
        if (port or _DEFAULT_PORTS.get(scheme)) != self.port:
            return False
        path = parts.path
        return not self.path or path == self.path or path.startswith(self.path + "/")
