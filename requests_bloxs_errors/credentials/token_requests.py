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

from typing import TYPE_CHECKING, Any

from ..errors.responses import local_response
from ..events import logger
from ..pipeline.steps import Step

if TYPE_CHECKING:
    from requests import Response

    from ..pipeline.call import Call

__all__ = ["TokenRequests"]


class TokenRequests(Step):
    """**Per call** (``before_call``): answer a script's request for the adapter's own
    credentials locally, and never sign a request to the token endpoint.

    :param credential: a credential with a token endpoint
        (:class:`~requests_bloxs_errors.BloxsTokenAuth`,
        :class:`~requests_bloxs_errors.ClientCredentialsAuth`).
    """

    __slots__ = ("credential",)

    def __init__(self, credential: Any) -> None:
        self.credential = credential

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
