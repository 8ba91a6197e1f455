"""The error table: what each status means and what to do about it.

One :class:`Rule` per status of the Bloxs error table (400, 401, 403, 404,
405, 429, 500, 503), the DealCloud addition 415, the gateway statuses 502 and
504, a 403-with-``Retry-After`` variant (an exhausted gateway quota) and one
fallback per class for every other 4xx and 5xx. The adapter, the retry
policy, :func:`~requests_bloxs_errors.classify` and the exceptions all read
this table; nothing else decides what a status means.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .. import exceptions as exc

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "IDEMPOTENT_METHODS",
    "IDEMPOTENT_ORDER",
    "INTERRUPTED_RULE",
    "QUOTA_RULE",
    "READS_TEXT",
    "READ_METHODS",
    "REAUTH_ADVICE",
    "RETRY_WORDS",
    "RULES",
    "TRANSPORT_RULES",
    "Retryable",
    "Rule",
    "TransportRule",
    "advice",
    "is_read",
    "retry_allowed",
    "rule_by_kind",
    "rule_for",
    "rules_text",
]

#: Methods whose repetition has the same effect as sending once (RFC 9110 9.2.2), in
#: the order the text names them.
IDEMPOTENT_ORDER = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE")
IDEMPOTENT_METHODS = frozenset(IDEMPOTENT_ORDER)
#: Methods that only read (RFC 9110 9.2.1).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: A POST to a path whose last segment is one of these only reads: Bloxs's
#: filter endpoints take their search in the body and change nothing (and have
#: a rate-limit category of their own).
READ_POST_SEGMENTS = frozenset({"filter"})


def is_read(method: str | None, url: str | None) -> bool:
    """Whether a request only reads: a safe method, or a POST to a Bloxs filter
    endpoint (``.../filter``). Reads are retried like a GET and never kept by the
    outbox; the one rule for both, which ``explain`` and the README state too."""
    method = (method or "GET").upper()
    if method in READ_METHODS:
        return True
    if method != "POST" or not url:
        return False
    path = url.split("://", 1)[-1].partition("/")[2].partition("?")[0].partition("#")[0]
    return path.rstrip("/").rsplit("/", 1)[-1].lower() in READ_POST_SEGMENTS


class Retryable(enum.Enum):
    """When resending the same request can help."""

    #: The request itself is at fault: the same bytes will fail the same way.
    NEVER = "never"
    #: Refused before any processing (rate limit, quota): safe for every method.
    ALWAYS = "always"
    #: The server may have acted before failing: only for idempotent methods or
    #: requests carrying an ``Idempotency-Key`` header.
    IDEMPOTENT = "idempotent"
    #: As IDEMPOTENT, and for any method when the server named a time to come
    #: back (a usable ``Retry-After``): a 503 with a wait was refused unprocessed.
    IDEMPOTENT_OR_RETRY_AFTER = "idempotent_or_retry_after"


@dataclass(frozen=True)
class Rule:
    """One row of the table.

    :ivar status: the status this row is for; None for a fallback row.
    :ivar kind: a stable machine-readable name, such as ``"rate_limited"``.
    :ivar title: a short human name.
    :ivar exception: the exception class raised for it.
    :ivar retry: when a resend may help.
    :ivar reauth: whether fresh credentials may help (401, plain 403).
    :ivar action: what to do, in this project's words.
    """

    status: int | None
    kind: str
    title: str
    exception: type[exc.BloxsError]
    retry: Retryable
    reauth: bool
    action: str

    def allows_retry(
        self, method: str | None, idempotency_key: bool, retry_after: float | None
    ) -> bool:
        """Tell whether a request with ``method`` may be resent after this error.

        :param method: the HTTP method, or None when unknown (treated as unsafe).
        :param idempotency_key: whether the request carries ``Idempotency-Key``.
        :param retry_after: the usable wait the server asked for, or None.
        """
        return retry_allowed(self.retry, method, idempotency_key, retry_after)


def retry_allowed(
    retry: Retryable, method: str | None, idempotency_key: bool, retry_after: float | None
) -> bool:
    """Apply a :class:`Retryable` rule to one request; see :meth:`Rule.allows_retry`."""
    if retry is Retryable.NEVER:
        return False
    if retry is Retryable.ALWAYS:
        return True
    safe = idempotency_key or (method or "").upper() in IDEMPOTENT_METHODS
    if retry is Retryable.IDEMPOTENT:
        return safe
    return safe or retry_after is not None


_ROWS = (
    Rule(
        status=400,
        kind="bad_request",
        title="Bad Request",
        exception=exc.BadRequestError,
        retry=Retryable.NEVER,
        reauth=False,
        action="Correct the request and send it again: the server rejected its content. "
        "`errors` lists every field at fault with its messages.",
    ),
    Rule(
        status=401,
        kind="unauthorized",
        title="Unauthorized",
        exception=exc.AuthenticationError,
        retry=Retryable.NEVER,
        reauth=True,
        action="Get a new token; the current one has most likely expired. If a fresh token is "
        "refused as well, check that the API key and secret (or client id) are still valid.",
    ),
    Rule(
        status=403,
        kind="forbidden",
        title="Forbidden",
        exception=exc.PermissionDeniedError,
        retry=Retryable.NEVER,
        reauth=True,
        action="Get a new token first: role and claim changes only reach newly issued tokens. "
        "If a fresh token is refused too, ask the tenant's administrator for the role or "
        "scope this call needs, and check the endpoint URL.",
    ),
    Rule(
        status=404,
        kind="not_found",
        title="Not Found",
        exception=exc.NotFoundError,
        retry=Retryable.NEVER,
        reauth=False,
        action="Check the URL; the resource may also have been deleted.",
    ),
    Rule(
        status=405,
        kind="method_not_allowed",
        title="Method Not Allowed",
        exception=exc.MethodNotAllowedError,
        retry=Retryable.NEVER,
        reauth=False,
        action="Send the request with the HTTP method this endpoint documents "
        "(for example POST where a GET was sent).",
    ),
    Rule(
        status=415,
        kind="unsupported_media_type",
        title="Unsupported Media Type",
        exception=exc.UnsupportedMediaTypeError,
        retry=Retryable.NEVER,
        reauth=False,
        action="Send a Content-Type header the endpoint accepts, usually application/json, "
        "with a body in that format.",
    ),
    Rule(
        status=429,
        kind="rate_limited",
        title="Too Many Requests",
        exception=exc.RateLimitError,
        retry=Retryable.ALWAYS,
        reauth=False,
        action="Slow down: wait `retry_after` seconds (a short back-off when the server gave "
        "none) before sending again; limits apply per endpoint and are shared by all "
        "clients of the environment.",
    ),
    Rule(
        status=500,
        kind="internal_server_error",
        title="Internal Server Error",
        exception=exc.ServerError,
        retry=Retryable.IDEMPOTENT,
        reauth=False,
        action="The API failed on its side. Try again later with back-off; if it persists, "
        "alert and quote `trace_id` to the API's support, and queue the work rather "
        "than block on it.",
    ),
    Rule(
        status=502,
        kind="bad_gateway",
        title="Bad Gateway",
        exception=exc.ServerError,
        retry=Retryable.IDEMPOTENT,
        reauth=False,
        action="A proxy or gateway in front of the API got no valid answer. Try again later "
        "with back-off.",
    ),
    Rule(
        status=503,
        kind="service_unavailable",
        title="Service Unavailable",
        exception=exc.ServiceUnavailableError,
        retry=Retryable.IDEMPOTENT_OR_RETRY_AFTER,
        reauth=False,
        action="The API is temporarily unavailable, for example for maintenance. Try again "
        "after `retry_after` seconds or later; queue the work rather than block on it.",
    ),
    Rule(
        status=504,
        kind="gateway_timeout",
        title="Gateway Timeout",
        exception=exc.ServerError,
        retry=Retryable.IDEMPOTENT,
        reauth=False,
        action="A gateway in front of the API timed out; the request may or may not have been "
        "processed. Try again later with back-off.",
    ),
)

#: The rows by status.
RULES: Mapping[int, Rule] = MappingProxyType({row.status: row for row in _ROWS if row.status})

#: A 403 carrying ``Retry-After``: API gateways (Azure API Management's quota
#: policy, for one) answer an exhausted call quota so. No re-authentication.
QUOTA_RULE = Rule(
    status=403,
    kind="quota_exceeded",
    title="Quota Exceeded",
    exception=exc.RateLimitError,
    retry=Retryable.ALWAYS,
    reauth=False,
    action="The API's call quota is used up; a new token will not help. Wait `retry_after` "
    "seconds (it may be long) before sending again, or schedule the work for then.",
)

CLIENT_ERROR_RULE = Rule(
    status=None,
    kind="client_error",
    title="Client Error",
    exception=exc.ClientError,
    retry=Retryable.NEVER,
    reauth=False,
    action="The server refused the request as it is: read `message`, correct the request "
    "and send it again.",
)

SERVER_ERROR_RULE = Rule(
    status=None,
    kind="server_error",
    title="Server Error",
    exception=exc.ServerError,
    retry=Retryable.IDEMPOTENT,
    reauth=False,
    action="The server failed. Try again later with back-off; alert if it persists.",
)

_BY_KIND: Mapping[str, Rule] = MappingProxyType(
    {row.kind: row for row in (*_ROWS, QUOTA_RULE, CLIENT_ERROR_RULE, SERVER_ERROR_RULE)}
)


def rule_for(status: int, has_retry_after: bool = False) -> Rule | None:
    """Return the row for ``status``; None below 400 or from 600 on.

    :param has_retry_after: whether the response carries a usable wait, which
        turns a 403 into :data:`QUOTA_RULE`.
    """
    if not 400 <= status < 600:
        return None
    if status == 403 and has_retry_after:
        return QUOTA_RULE
    row = RULES.get(status)
    if row is not None:
        return row
    return CLIENT_ERROR_RULE if status < 500 else SERVER_ERROR_RULE


def rule_by_kind(kind: str) -> Rule:
    """Return the row named ``kind`` (as found in :attr:`ErrorInfo.kind`)."""
    return _BY_KIND[kind]


#: The statuses the default policy retries: every row that may be retried.
#: (A 403 quota is retried whenever 429 is: both are rate limits.)
DEFAULT_RETRY_STATUSES = frozenset(
    status for status, row in RULES.items() if row.retry is not Retryable.NEVER
)


@dataclass(frozen=True)
class TransportRule:
    """When a request that got no response at all may be sent again.

    :ivar kind: a stable name for the kind of failure.
    :ivar retry: when a resend may help.
    :ivar description: which failures these are, in this project's words.
    """

    kind: str
    retry: Retryable
    description: str


#: The transport failures, the same way the table covers statuses. Which
#: exceptions fall under which row is decided in :mod:`~requests_bloxs_errors.pipeline.failures`.
TRANSPORT_RULES: Mapping[str, TransportRule] = MappingProxyType(
    {
        rule.kind: rule
        for rule in (
            TransportRule(
                kind="not_sent",
                retry=Retryable.ALWAYS,
                description="the connection was refused, the name did not resolve, or "
                "connecting timed out; the server never saw the request",
            ),
            TransportRule(
                kind="no_answer",
                retry=Retryable.IDEMPOTENT,
                description="the connection was reset or closed, reading timed out, or the "
                "TLS handshake broke off; the server may have acted on the request",
            ),
            TransportRule(
                kind="permanent",
                retry=Retryable.NEVER,
                description="a certificate or hostname failed verification (the server's, "
                "or our client certificate at the server), a proxy refused the login or the "
                "tunnel, the URL or a header is invalid, or anything else not named above; the "
                "same request would fail the same way",
            ),
        )
    }
)

#: A call that an exception ended in the middle: not a transport failure of the
#: host's, but the caller's or the client's own (a header value that cannot be
#: encoded, a body generator that raised, a signal handler's job timeout, a
#: KeyboardInterrupt). Never resent, never kept by the outbox, never counted
#: against the host's circuit; the exception reaches the caller unchanged.
INTERRUPTED_RULE = TransportRule(
    kind="interrupted",
    retry=Retryable.NEVER,
    description="an exception of the caller's or the client's own ended the call in the "
    "middle (a header that cannot be encoded, a body generator that raised, a signal); it "
    "is raised as it is",
)


_METHODS = ", ".join(IDEMPOTENT_ORDER)
#: Which requests are reads, in words (``table``, ``explain`` and the README).
READS_TEXT = (
    "Reads: GET, HEAD, OPTIONS, TRACE, and a POST to a Bloxs filter endpoint (a path "
    "ending in /filter, a search by Bloxs's own definition): retried like a GET, never kept "
    "by the outbox, paced as the filter category."
)

#: How each :class:`Retryable` reads: a short form for tables, a sentence for
#: ``explain`` and the README. The only place these rules are put in words.
RETRY_WORDS: Mapping[Retryable, tuple[str, str]] = MappingProxyType(
    {
        Retryable.NEVER: ("never", "no: sending the same request again cannot succeed."),
        Retryable.ALWAYS: (
            "every method",
            "yes, for every method, POST and PATCH included: the server refused the request "
            "before processing it.",
        ),
        Retryable.IDEMPOTENT: (
            "idempotent",
            f"only for {_METHODS}, a read (a Bloxs filter POST), or a request carrying an "
            "Idempotency-Key header; any other method is sent once, never twice.",
        ),
        Retryable.IDEMPOTENT_OR_RETRY_AFTER: (
            "idempotent, or with Retry-After",
            f"for {_METHODS}, a read (or with an Idempotency-Key); for other POST and PATCH "
            "requests only when the response carries a usable Retry-After, which means the "
            "request was refused unprocessed.",
        ),
    }
)


def rules_text() -> list[str]:
    """The retry rules as lines of text, for ``table`` and the README (a test compares)."""
    lines = [
        f"Idempotent: {_METHODS}, a read, or any request carrying an Idempotency-Key header.",
        READS_TEXT,
        "A body that cannot be rewound (a generator) is never sent twice.",
    ]
    for rule in TRANSPORT_RULES.values():
        words = RETRY_WORDS[rule.retry][0]
        lines.append(f"No response, {rule.kind}: {rule.description}. Retried: {words}.")
    return lines


#: Advice for 401 and 403 that fits what the adapter knows of the request:
#: ``"unsigned"`` when it carried no credentials of the adapter's, and
#: ``"refused_fresh"`` when a freshly fetched credential was refused as well.
#: Otherwise the row's own ``action`` applies.
REAUTH_ADVICE: Mapping[tuple[int, str], str] = MappingProxyType(
    {
        (401, "unsigned"): "The server wants credentials this request did not carry: mount "
        "the adapter with auth= for this URL (rbe.BloxsTokenAuth, rbe.ClientCredentialsAuth "
        "or rbe.TokenAuth), or check the Authorization header you set yourself.",
        (401, "refused_fresh"): "A freshly fetched token was refused as well, so it did not "
        "just expire: check that the API key and secret (or the client id and secret) are "
        "still valid.",
        (403, "unsigned"): "Not allowed, and the request carried no credentials of the "
        "adapter's: if the endpoint needs them, mount with auth=; otherwise ask the tenant's "
        "administrator for the role or scope this call needs.",
        (403, "refused_fresh"): "A freshly fetched token was refused as well, so this is no "
        "stale role: ask the tenant's administrator for the role or scope this call needs, "
        "and check the endpoint URL.",
    }
)


def advice(rule: Rule, situation: str | None) -> str:
    """The advice for ``rule`` in ``situation`` (a key of :data:`REAUTH_ADVICE`)."""
    if rule.status is None or situation is None:
        return rule.action
    return REAUTH_ADVICE.get((rule.status, situation), rule.action)
