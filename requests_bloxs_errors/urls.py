"""URL helpers: the adapter's signing scope, and URLs made safe to print.

Everything the project writes to a log line, an exception message or a repr
goes through :func:`redact_url` first: the query string (where tokens and
signatures hide), the fragment and any ``user:password@`` part are dropped.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "Prefix",
    "host_of",
    "is_loopback",
    "normalized_path",
    "origin",
    "origin_of",
    "redact_url",
    "safe_for_message",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Percent-encodings a server may decode before it resolves dot segments.
_ENCODED_SEPARATORS = re.compile(r"%2e|%2f|%5c", re.IGNORECASE)
_DECODED = {"%2e": ".", "%2f": "/", "%5c": "/"}


def safe_for_message(url: object, limit: int = 200) -> str:
    """``url`` made fit for an error message, even when it does not parse.

    :func:`redact_url` needs a URL that splits; this works on any text: the
    ``user:password@`` part, the query string and the fragment are removed
    by plain string operations, and the result is one printable line.
    """
    text = url if isinstance(url, str) else repr(url)
    scheme, sep, rest = text.partition("//")
    if sep and "@" in rest:
        # everything up to the last "@" may be a password, even one holding "/", "?"
        # or "#" (invalid unencoded, but seen): mask it all rather than guess
        rest = "***@" + rest.rsplit("@", 1)[1]
    text = scheme + sep + rest.split("?", 1)[0].split("#", 1)[0]
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(text)


def normalized_path(path: str) -> str:
    """``path`` as a server may resolve it: dots decoded, dot segments removed.

    Percent-encoded dots and slashes (``%2e``, ``%2f``, ``%5c``) are decoded
    first, since many servers decode them before resolving ``..``; then the
    dot segments are removed as RFC 3986 section 5.2.4 says. Used only to
    decide where credentials may go, so it errs towards "outside".
    """
    decoded = _ENCODED_SEPARATORS.sub(lambda m: _DECODED[m.group(0).lower()], path)
    output: list[str] = []
    for segment in decoded.replace("\\", "/").split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    joined = "/".join(output)
    if decoded.endswith(("/.", "/..")):
        joined += "/"
    return joined if joined.startswith("/") else "/" + joined


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
    if not parts.scheme:
        return parts.path or "/"
    return f"{parts.scheme}://{_netloc(host, port)}{parts.path or '/'}"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials, path or query.

    :raises ValueError: when ``url`` does not parse or names no scheme and host.
    """
    parts = urlsplit(url)
    port = parts.port  # raises ValueError for a bad port
    if not parts.scheme or not parts.hostname:
        raise ValueError("the URL names no scheme and host")
    return f"{parts.scheme}://{_netloc(parts.hostname, port)}"


def host_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, the default port written out, the host in
    lower case: one name per server (``https://h`` and ``https://h:443`` are one).
    Never raises; a URL that does not split gives ``"<unparseable url>"``."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme.lower()}://{_netloc(parts.hostname or '', port)}"


def origin_of(url: str) -> str:
    """:func:`host_of` of ``url``, remembered by the URL's scheme and authority (the
    part before its path): the rate limit names a key by it for every request."""
    start = url.find("://")
    end = url.find("/", start + 3) if start >= 0 else -1
    prefix = url[:end] if end >= 0 else url
    if "@" in prefix or "?" in prefix or "#" in prefix:  # (credentials are not kept)
        return host_of(url)
    return _origin(prefix)


@functools.lru_cache(maxsize=256)
def _origin(prefix: str) -> str:
    return host_of(prefix)


def _netloc(host: str, port: int | None) -> str:
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


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
    #: ``scheme://host[:port]`` as requests writes a prepared URL of this origin:
    #: a URL that starts with it (then ``/``) needs no parsing to be matched.
    origin: str = field(default="", repr=False, compare=False)

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
            # urllib's own text may quote parts of the URL: say what is wrong in our words
            reason = "bad port" if "port" in str(exc).lower() else "it does not parse"
            raise ValueError(
                f"prefix {safe_for_message(prefix)} is not a valid URL prefix: {reason}"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not prefix.lower().startswith(f"{scheme}://"):
            raise ValueError(
                f"prefix {safe_for_message(prefix)} must start with 'http://' or 'https://' "
                "(for example 'https://' or 'https://acme.bloxs.io/')"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError("prefix must not contain credentials (user:password@)")
        if parts.query or parts.fragment:
            raise ValueError("prefix must not contain a query string or a fragment")
        host = parts.hostname.lower() if parts.hostname else None
        port = (port or _DEFAULT_PORTS[scheme]) if host else None
        written = f"[{host}]" if host and ":" in host else host
        default = port == _DEFAULT_PORTS[scheme]
        return cls(
            raw=prefix,
            scheme=scheme,
            host=host,
            port=port,
            path=normalized_path(parts.path).rstrip("/") if parts.path else "",
            origin=f"{scheme}://{written}{'' if default else f':{port}'}" if host else "",
        )

    @property
    def names_host(self) -> bool:
        """True when the prefix names a host, not just a scheme."""
        return self.host is not None

    def matches(self, url: str | None) -> bool:
        """Tell whether ``url`` lies under this prefix (scheme, host, port, path)."""
        if not url:
            return False
        origin = self.origin
        if origin and url.startswith(origin) and url[len(origin) : len(origin) + 1] == "/":
            # the usual case, a URL requests prepared for this origin: only the path
            # is left to compare, and only a path with dots, escapes or backslashes
            # needs normalizing
            if not self.path:
                return True
            path = url[len(origin) :].partition("?")[0].partition("#")[0]
            if "." in path or "%" in path or "\\" in path:
                path = normalized_path(path)
            return path == self.path or path.startswith(self.path + "/")
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
        if not self.path:
            return True
        path = normalized_path(parts.path)
        return path == self.path or path.startswith(self.path + "/")
