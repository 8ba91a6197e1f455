"""A script's own token requests: :class:`TokenRequests`, the step that answers them.

A legacy script run under ``run`` keeps fetching its own token: it posts its
key and secret to ``{base}/Authorization`` (Bloxs) or the OAuth2 token URL
(DealCloud), as it always did. The adapter holds a credential for the same
API, so a fleet of such scripts would make a token request each, against a
token endpoint that allows a handful a minute. As Vault Agent answers an
application's logins from its cache, this step answers a request to the
credential's own token endpoint:

* when it asks for the very credentials the adapter holds (same key and
  secret, same scope), with the adapter's token (one fetch for the process,
  or for the fleet with a shared token cache), in the vendor's own format
  (Bloxs ``{"token", "expiration"}``, DealCloud ``{"access_token",
  "token_type", "expires_in"}``), marked local; nothing is sent;
* when it asks for other credentials, by letting it go out unchanged, and
  never signed with the adapter's token: its answer comes back unchanged.

If the adapter's credential cannot get a token (the endpoint is down, the
secret refused), the script's request goes out as it was: the server
answers it as it would have. Secrets never reach a log line.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..errors.responses import local_response
from ..events import logger
from ..pipeline.steps import Step
from . import signing

if TYPE_CHECKING:
    from requests import PreparedRequest, Response

    from ..pipeline.call import Call

__all__ = ["TokenRequests", "asks_for_a_token"]

#: The last segments of a token endpoint's path: Bloxs's ``{base}/Authorization``,
#: OAuth2's ``.../oauth/token`` (DealCloud's ``/api/rest/v1/oauth/token``) and kin.
_TOKEN_PATH = re.compile(r"/(authorization|token)/?$", re.IGNORECASE)
#: Fields of a body that hold a secret (JSON keys or form fields, any case).
_SECRET_FIELDS = frozenset(
    {"apisecret", "client_secret", "client_assertion", "password", "refresh_token"}
)


def asks_for_a_token(request: PreparedRequest) -> bool:
    """Whether ``request`` asks a token endpoint for a token, or carries a secret in
    its body, whatever credentials the adapter holds: a POST to a path ending in
    ``/Authorization`` or ``/token``, or a body with ``apiSecret``,
    ``client_secret``, ``password``, ``refresh_token`` or ``grant_type``.

    Such a request is never kept for later (the outbox would store and replay
    its secret); it is answered now, or fails now.
    """
    url = request.url or ""
    path = url.split("://", 1)[-1].partition("/")[2].partition("?")[0].partition("#")[0]
    if (request.method or "").upper() == "POST" and _TOKEN_PATH.search("/" + path):
        return True
    return _has_secret(request.body)


def _has_secret(body: object) -> bool:
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if not isinstance(body, bytes) or not body:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        return any(str(name).lower() in _SECRET_FIELDS for name in document)
    try:
        fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    names = {name.lower() for name, _ in fields}
    return bool(names & _SECRET_FIELDS) or "grant_type" in names


class TokenRequests(Step):
    """**Per call** (``before_call``): answer a script's request for the adapter's own
    credentials locally, and never sign a request to the token endpoint.

    :param credential: a credential with a token endpoint
        (:class:`~requests_bloxs_errors.BloxsTokenAuth`,
        :class:`~requests_bloxs_errors.ClientCredentialsAuth`).
    """

    __slots__ = ("credential", "rate_limit")

    def __init__(self, credential: Any, rate_limit: Any = None) -> None:
        self.credential = credential
        self.rate_limit = rate_limit

    def before_call(self, call: Call) -> Response | None:
        """A local answer for the credential's own token request, else None."""
        credential = self.credential
        request = call.request
        if not credential.is_token_request(request):
            return None
        call.signed = False  # a token request never carries the adapter's token
        if not credential.asks_for_these_credentials(request):
            return None  # other credentials: to the server, unchanged
        try:
            # the fetch this may cause works for this call: within its deadline, and
            # paced by the adapter's rate limit (its 'authorization' category)
            with signing.signing(credential, call.deadline, self.rate_limit, call.clock):
                answer = credential.token_answer()
        except Exception as exc:  # no token to be had: the request goes out as it was
            logger.info(
                "%s %s asks for the adapter's own token, which it cannot get now (%s); "
                "the request goes to the server",
                call.method,
                call.url,
                type(exc).__name__,
            )
            return None
        logger.debug("%s %s answered with the adapter's own token", call.method, call.url)
        return local_response(request, 200, answer, "token")
