"""The IETF RateLimit header fields, read as one more source of what a server allows.

draft-ietf-httpapi-ratelimit-headers defines two Structured Fields (RFC 9651
lists):

``RateLimit-Policy: "default";q=100;w=60``
    the quota policies the server applies: ``q`` requests per window of ``w``
    seconds (more than one may be listed: ``"burst";q=10;w=1, "day";q=1000;w=86400``);
``RateLimit: "default";r=0;t=30``
    the policy closest to being spent, by name: ``r`` requests remain, and the
    quota is renewed in ``t`` seconds.

Earlier versions of the draft, still widely served, sent the same as
``RateLimit-Remaining: 0`` and ``RateLimit-Reset: 30`` (seconds), with
``RateLimit-Policy: 100;w=60`` (an integer item); those are read too
(``RateLimit-Limit`` alone names no window, so no rule comes from it).

Like :mod:`.parsing`, everything here is pure and total: any input gives a
result (None where nothing usable was said), never an exception. A field
longer than :data:`MAX_FIELD` characters, a list of more than
:data:`MAX_MEMBERS` members, or a member that is not what the draft defines is
not used; numbers are bounded by Structured Fields' own limits (15 digits).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MAX_FIELD", "MAX_MEMBERS", "RateLimitFields", "parse_sf_list", "rate_limit_fields"]

#: The longest field value read, in characters.
MAX_FIELD = 4096
#: The most members of a list read.
MAX_MEMBERS = 32

#: A parsed list member: its bare item and its parameters.
Member = tuple[object, dict[str, object]]

_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_NAMES = ("ratelimit", "ratelimit-policy", "ratelimit-remaining")


@dataclass(frozen=True)
class RateLimitFields:
    """What a response's RateLimit fields say.

    :ivar policy: ``(quota, window_seconds)`` of the policy in force: the one the
        ``RateLimit`` field names, else the only one listed; None when none (or
        more than one, unnamed) is listed.
    :ivar remaining: requests left in the policy's window, or None.
    :ivar reset: seconds until the quota is renewed, or None.
    """

    policy: tuple[int, float] | None = None
    remaining: int | None = None
    reset: float | None = None


def rate_limit_fields(headers: Mapping[str, str]) -> RateLimitFields | None:
    """The RateLimit fields of ``headers`` (a case-insensitive mapping, as a
    response's), or None when it has none that can be used."""
    if not any(name in headers for name in _NAMES):
        return None
    policies = _policies(headers.get("RateLimit-Policy"))
    named, remaining, reset = _current(headers.get("RateLimit"))
    if remaining is None and reset is None:  # the earlier draft's fields (a quota in
        remaining = _whole(headers.get("RateLimit-Remaining"))  # RateLimit-Limit says
        reset = _whole(headers.get("RateLimit-Reset"))  # no window: not a rule)
    if named is not None and named in policies:
        policy: tuple[int, float] | None = policies[named]
    elif len(policies) == 1:
        (policy,) = policies.values()
    else:
        policy = None
    if policy is None and remaining is None and reset is None:
        return None
    return RateLimitFields(policy, remaining, None if reset is None else float(reset))


def _policies(value: str | None) -> dict[object, tuple[int, float]]:
    """``RateLimit-Policy``: each policy's name to its ``(quota, window)``."""
    found: dict[object, tuple[int, float]] = {}
    for item, params in parse_sf_list(value) or ():
        quota = params.get("q", item if isinstance(item, int) else None)
        window = params.get("w")
        if not isinstance(quota, int) or isinstance(quota, bool) or quota < 1:
            continue
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            continue
        found[None if isinstance(item, int) else item] = (quota, float(window))
    return found


def _current(value: str | None) -> tuple[object, int | None, int | None]:
    """``RateLimit``: the name of the policy in force, its ``r`` and its ``t``."""
    members = parse_sf_list(value)
    if not members:
        return None, None, None
    item, params = members[0]
    return None if isinstance(item, int) else item, _count(params.get("r")), _count(params.get("t"))


def _count(value: object) -> int | None:
    """``value`` when it is a whole number of 0 or more (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _whole(value: str | None) -> int | None:
    """A field that is one whole number of 0 or more, or None."""
    members = parse_sf_list(value)
    return _count(members[0][0]) if members and len(members) == 1 else None


def parse_sf_list(value: str | None) -> list[Member] | None:
    """An RFC 9651 List of Items (no Inner Lists): ``[(item, params), ...]``, or None
    when ``value`` is not one (or is longer than :data:`MAX_FIELD`, or has more
    than :data:`MAX_MEMBERS` members).

    Items and parameter values are ints, floats (decimals), strs (strings and
    tokens), bytes kept as their base64 text, and bools.
    """
    if value is None or len(value) > MAX_FIELD:
        return None
    text = value.strip(" \t")
    if not text:
        return []
    members: list[Member] = []
    at = 0
    while True:
        parsed = _item(text, at)
        if parsed is None:
            return None
        item, at = parsed
        params: dict[str, object] = {}
        while at < len(text) and text[at] == ";":
            at += 1
            while at < len(text) and text[at] == " ":
                at += 1
            key = _KEY.match(text, at)
            if key is None:
                return None
            at = key.end()
            param: object = True
            if at < len(text) and text[at] == "=":
                got = _item(text, at + 1)
                if got is None:
                    return None
                param, at = got
            params[key.group()] = param
        members.append((item, params))
        if len(members) > MAX_MEMBERS:
            return None
        while at < len(text) and text[at] in " \t":
            at += 1
        if at == len(text):
            return members
        if text[at] != ",":
            return None
        at += 1
        while at < len(text) and text[at] in " \t":
            at += 1
        if at == len(text):
            return None  # a trailing comma


def _item(text: str, at: int) -> tuple[object, int] | None:
    """The bare item at ``at`` and where it ends, or None."""
    if at >= len(text):
        return None
    first = text[at]
    if first == '"':
        found = _STRING.match(text, at)
        if found is None:
            return None
        return re.sub(r"\\(.)", r"\1", found.group(1)), found.end()
    if first == "?":
        if text[at + 1 : at + 2] in ("0", "1"):
            return text[at + 1] == "1", at + 2
        return None
    if first == ":":
        found = _BYTES.match(text, at)
        return (found.group()[1:-1], found.end()) if found is not None else None
    if first == "-" or first.isdigit():
        found = _NUMBER.match(text, at)
        if found is None:
            return None
        number = found.group()
        return (float(number) if "." in number else int(number)), found.end()
    found = _TOKEN.match(text, at)
    return (found.group(), found.end()) if found is not None else None
