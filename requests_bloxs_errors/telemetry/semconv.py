"""The attributes of the HTTP client semantic conventions, and the names this package adds.

Nothing here imports OpenTelemetry: attributes are plain dictionaries.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DURATION_BUCKETS",
    "METHODS",
    "full_url",
    "request_attributes",
]

#: Methods the conventions name; others are reported as ``_OTHER``.
METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
#: The conventions' advised bucket boundaries for ``http.client.request.duration``.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def full_url(url: str) -> str:
    """``url`` for ``url.full``: no credentials, every query value ``REDACTED``, no
    fragment. A query part without ``=`` (``?<token>``) is all value: it is
    ``REDACTED`` whole. A URL that does not split gives ``""``."""
    if "?" not in url and "@" not in url and "#" not in url:
        return url  # (the usual case: nothing to remove)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    query = "&".join(
        pair.split("=", 1)[0] + "=REDACTED" if "=" in pair else "REDACTED"
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def request_attributes(method: str, url: str) -> dict[str, str | int]:
    """The attributes of a request that every span and measurement of it carries."""
    if method in METHODS:
        attributes: dict[str, str | int] = {"http.request.method": method}
    else:
        attributes = {"http.request.method": "_OTHER", "http.request.method_original": method}
    start = url.find("://")
    end = url.find("/", start + 3) if start >= 0 else -1
    origin = url[:end] if end >= 0 else url
    if "@" in origin or "?" in origin or "#" in origin:  # (credentials are not kept)
        attributes.update(_server(url))
    else:
        attributes.update(_server_of(origin))
    return attributes


@functools.lru_cache(maxsize=256)
def _server_of(origin: str) -> dict[str, str | int]:
    return _server(origin)


def _server(url: str) -> dict[str, str | int]:
    """``server.address``, ``server.port`` and ``url.scheme`` of ``url``."""
    found: dict[str, str | int] = {}
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
        host = parts.hostname
    except ValueError:
        return found
    if host:
        found["server.address"] = host
    if port is not None:
        found["server.port"] = port
    if scheme:
        found["url.scheme"] = scheme
    return found
