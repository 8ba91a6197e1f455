"""The responses the adapter hands back: :class:`BloxsResponse`, :func:`local_reply`, and
:func:`attempts`, the story of how a response came about.

An error response that went through the adapter becomes a
:class:`BloxsResponse`: still a :class:`requests.Response` in every way, but
its ``raise_for_status()`` raises the typed error. When errors are not
raised (``raise_errors=False``, the default, and ``run``'s), a call the
adapter refuses before sending (an open circuit, no rate-limit permit in
time) comes back as a *local reply*, as Envoy or Istio answer for their
circuit breaker or local rate limit: a 503 or 429 that the application
handles like any other, marked local by the :data:`LOCAL_HEADER` header, with
``Retry-After`` in whole seconds and an ``application/problem+json`` body.
"""

from __future__ import annotations

import io
import json
import math
from http import HTTPStatus
from typing import TYPE_CHECKING

from requests import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse

from ..events import Attempt
from ..exceptions import BloxsError
from .classify import ErrorInfo, classify, error_for

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "LOCAL_HEADER",
    "BloxsResponse",
    "attempts",
    "is_local",
    "local_reply",
    "local_response",
]

#: The header that marks a reply the adapter made itself, and says why
#: (``circuit_open``, ``rate_limited``, ``token``...): no server sent it.
LOCAL_HEADER = "X-Requests-Bloxs-Errors-Local"


class BloxsResponse(Response):
    """An error response that went through a :class:`~requests_bloxs_errors.BloxsAdapter`.

    It is a :class:`requests.Response` in every way, except that
    :meth:`raise_for_status` raises the typed
    :class:`~requests_bloxs_errors.BloxsError` (still a
    :class:`requests.HTTPError`). Success responses keep their own class.
    """

    __attrs__ = [  # noqa: RUF012
        *Response.__attrs__,
        "_bloxs_info",
        "_bloxs_history",
        "_bloxs_outbox_id",
        "_bloxs_error",
        "_bloxs_local",
    ]

    _bloxs_info: ErrorInfo | None = None
    _bloxs_history: tuple[Attempt, ...] = ()
    _bloxs_outbox_id: int | None = None
    #: For a local reply: the class of the error the call would have raised.
    _bloxs_error: type[BloxsError] | None = None
    #: Made by the adapter (:func:`local_response`), not received: a server's header
    #: of the same name makes no reply local.
    _bloxs_local = False

    @property
    def error_info(self) -> ErrorInfo | None:
        """The classification of this response."""
        return classify(self)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every request sent to get this response; see :func:`attempts`."""
        return attempts(self)

    @property
    def local(self) -> bool:
        """Whether the adapter made this reply itself (nothing was sent)."""
        return is_local(self)

    def raise_for_status(self) -> None:
        """Raise the typed exception for this error response."""
        info = classify(self)
        if info is None:
            super().raise_for_status()
            return
        raise error_for(self, info, self._bloxs_history, error_class=self._bloxs_error)


def local_reply(
    request: PreparedRequest, refusal: BloxsError, outbox_id: int | None = None
) -> BloxsResponse:
    """The response for a call the adapter refused before sending it.

    :param request: the caller's request (``response.request``).
    :param refusal: the error the call would have raised (``CircuitOpenError``,
        ``RateLimitError``): its status, text and ``retry_after`` make the reply.
    :param outbox_id: the outbox entry that keeps the request, when it was kept.
    :return: a :class:`BloxsResponse` whose ``raise_for_status()`` raises an
        error of the refusal's class (with ``outbox_id``).
    """
    info = refusal.info
    problem: dict[str, Any] = {
        "type": "about:blank",
        "title": _reason(info.status),
        "status": info.status,
        "detail": str(refusal),
        "kind": info.kind,
    }
    if outbox_id is not None:
        problem["outboxId"] = outbox_id
    headers = {}
    if info.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(info.retry_after)))
    response = local_response(
        request,
        info.status,
        problem,
        info.kind,
        content_type="application/problem+json",
        headers=headers,
    )
    response._bloxs_info = info
    response._bloxs_history = refusal.history
    response._bloxs_outbox_id = outbox_id
    response._bloxs_error = type(refusal)
    return response


def local_response(
    request: PreparedRequest,
    status: int,
    document: object,
    why: str,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> BloxsResponse:
    """A response the adapter makes itself: ``document`` as JSON, marked local by
    :data:`LOCAL_HEADER` (its value says ``why``). Nothing is sent or received.

    :param request: the caller's request (``response.request``).
    """
    body = json.dumps(document).encode()
    response = BloxsResponse()
    response.status_code = status
    response.reason = _reason(status)
    response.url = request.url or ""
    response.request = request
    response.encoding = "utf-8"
    response.headers = CaseInsensitiveDict(
        {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            LOCAL_HEADER: why,
            **(headers or {}),
        }
    )
    # a script that reads ``response.raw`` gets the same bytes, as from a server
    response.raw = HTTPResponse(
        body=io.BytesIO(body),
        headers=dict(response.headers),
        status=status,
        reason=response.reason,
        preload_content=False,
        decode_content=False,
    )
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    response._bloxs_local = True
    return response


def is_local(response: object) -> bool:
    """Whether the adapter made ``response`` itself (a refusal, a script's token
    request answered with the adapter's token): nothing reached the host, so it
    says nothing of the host's health."""
    return getattr(response, "_bloxs_local", False) is True


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # pragma: no cover - the adapter makes only standard statuses
        return ""


def attempts(response: Response | BaseException) -> tuple[Attempt, ...]:
    """Every request the adapter sent to get ``response``, oldest first.

    For a response that came back at the first try this is one synthesized
    entry; for one that was not sent through a :class:`~requests_bloxs_errors.BloxsAdapter`,
    too. A local reply (nothing was sent) has the attempts made before it, if
    any. Given the exception of a call that got no response at all (a
    ``requests.ConnectionError``, say), it returns that call's attempts, or
    ``()`` when the exception did not come from the adapter.

    Usage::

        >>> for attempt in rbe.attempts(response):
        ...     print(attempt.number, attempt.status, attempt.decision, attempt.wait)
    """
    if isinstance(response, BloxsError):
        return response.history
    history: tuple[Attempt, ...] = getattr(response, "_bloxs_history", ())
    if history or isinstance(response, BaseException) or is_local(response):
        return history
    info = classify(response)
    kind = info.kind if info is not None else "ok"
    return (Attempt(1, response.status_code, kind, 0.0, "returned"),)
