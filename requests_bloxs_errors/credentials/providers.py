"""Credentials for the two APIs this project serves.

* :class:`BloxsTokenAuth`: ``POST {base_url}/Authorization`` with the API key
  and secret, ``Authorization: Bearer <token>`` (24-hour tokens).
* :class:`ClientCredentialsAuth`: OAuth2 client credentials, as DealCloud's
  ``{base}/api/rest/v1/oauth/token`` (900-second tokens).
* :class:`BloxsHmacAuth`: the Bloxs v1 request signature, computed afresh for
  every attempt.

Each plugs into ``BloxsAdapter(auth=...)`` and :func:`~requests_bloxs_errors.mount`.
Token requests go through a session of their own with a
:class:`~requests_bloxs_errors.BloxsAdapter` on the credential's clock, so a
token endpoint that answers 429 or 5xx is retried by the same rules as any
request (its waits on that clock: none at all on a shared ``FakeClock``), while
refused credentials (400/401/403) raise
:class:`~requests_bloxs_errors.AuthenticationError` at once, naming the
credential to check. Secrets never appear in reprs, logs or messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urljoin

import requests
from requests import PreparedRequest, Response

from ..adapter import attempts, mount
from ..clock import SYSTEM, Clock
from ..errors.bodies import read_error_body
from ..errors.classify import classify, error_for
from ..errors.parsing import parse_http_date, parse_iso8601
from ..exceptions import AuthenticationError, TokenResponseError
from ..patch import ORIGINAL_SESSION
from ..urls import Prefix, host_of, origin, redact_url, safe_for_message
from .auth import CachedTokenAuth

__all__ = ["BloxsHmacAuth", "BloxsTokenAuth", "ClientCredentialsAuth", "bloxs_signature"]

#: Where DealCloud's token endpoint lies below an environment's base URL.
DEALCLOUD_TOKEN_PATH = "/api/rest/v1/oauth/token"
#: Seconds a token request may take, per attempt.
DEFAULT_TOKEN_TIMEOUT = 10.0
_REFUSED = (400, 401, 403)


def masked(value: str) -> str:
    """Enough of an identifier to recognise it, never all of it."""
    return f"{value[:4]}\u2026" if len(value) > 6 else "\u2026"


class _EndpointTokenAuth(CachedTokenAuth):
    """A token from an HTTP endpoint, fetched through a retrying session."""

    #: Names the credentials to check in the refusal message.
    check_hint = "the credentials"

    def __init__(
        self, token_url: str, *, timeout: float, max_retries: int, clock: Clock = SYSTEM
    ) -> None:
        prefix = Prefix.parse(token_url)  # validates: http(s) URL with a host
        if not prefix.names_host:
            raise ValueError(f"the token URL must name a host, got {safe_for_message(token_url)}")
        self.token_url = token_url
        self.timeout = timeout
        self.max_retries = max_retries
        super().__init__(clock=clock)

    def _reset(self) -> None:
        super()._reset()
        self._session: requests.Session | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_session", None)
        return state

    def _secrets(self) -> Iterable[str]:
        return ()

    # -- a script's own token requests (see TokenRequests) ------------------------

    def is_token_request(self, request: PreparedRequest) -> bool:
        """Whether ``request`` is a POST to this credential's token endpoint."""
        if (request.method or "").upper() != "POST" or not request.url:
            return False
        return _endpoint_key(request.url) == _endpoint_key(self.token_url)

    def asks_for_these_credentials(self, request: PreparedRequest) -> bool:
        """Whether a token request asks for exactly this credential's token (its key
        and secret, its scope): then the adapter answers it with this credential's."""
        return False

    def token_answer(self) -> dict[str, Any]:
        """The token endpoint's answer, in the vendor's own format, with this
        credential's token (fetched first when it has none, or its shared cache's)."""
        raise NotImplementedError

    def _post(self, **kwargs: Any) -> Response:
        if self._session is None:
            # the Session class as it was before install(): a token request must
            # never pass through an installed adapter that signs with this credential
            session = ORIGINAL_SESSION()
            session.trust_env = False  # no .netrc credentials or proxies slipped into token calls
            # on this credential's clock: the waits between its attempts, their deadline
            mount(session, "https://", max_retries=self.max_retries, clock=self.clock)
            mount(session, "http://", max_retries=self.max_retries, clock=self.clock)
            self._session = session
        # never follow a redirect: it would carry the secret to wherever it points
        response = self._session.post(
            self.token_url, timeout=self.timeout, allow_redirects=False, **kwargs
        )
        if 300 <= response.status_code < 400:
            response.close()
            raise TokenResponseError(
                f"the token endpoint {redact_url(self.token_url)} answered "
                f"{response.status_code}, a redirect to "
                f"{_location_origin(response.headers.get('Location'), self.token_url)}; "
                "token requests never follow redirects, since they carry the secret: set the "
                "token URL to the final address",
                response=response,
            )
        if response.status_code >= 400:
            _redact_response(response, [s for s in self._secrets() if s])
            raise self._refusal(response)
        return response

    def _refusal(self, response: Response) -> Exception:
        info = classify(response)
        if info is None:  # pragma: no cover - status >= 600
            return TokenResponseError(f"the token endpoint answered {response.status_code}")
        if response.status_code not in _REFUSED:
            return error_for(response, info, attempts(response))
        details = [info.message] if info.message else []
        details += info.error_lines
        said = "; ".join(d.rstrip(". ") for d in details)
        said = f" The server said: {said}." if said else ""
        message = (
            f"{response.status_code} from POST {redact_url(self.token_url)}: the token endpoint "
            f"refused {self.check_hint}.{said}"
        )
        info = dataclasses.replace(info, action=f"Check {self.check_hint}.")
        return AuthenticationError(
            message, response=response, info=info, history=attempts(response)
        )

    @staticmethod
    def _json(response: Response) -> dict[str, Any]:
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise TokenResponseError(
                f"the token endpoint {redact_url(response.url)} answered "
                f"{response.status_code} without a JSON object",
                response=response,
            )
        return document


class BloxsTokenAuth(_EndpointTokenAuth):
    """Bearer tokens from the Bloxs ``/Authorization`` endpoint.

    Usage::

        >>> auth = rbe.BloxsTokenAuth("https://acme.bloxs.io", API_KEY, API_SECRET)
        >>> rbe.mount(session, "https://acme.bloxs.io/", auth=auth)

    :param base_url: the environment's base URL, such as ``https://acme.bloxs.io``.
    :param api_key: the user's personal API key.
    :param api_secret: the client environment's secret key.
    :param cache: None (this process only), or ``"sqlite:///path"`` /
        ``"redis://host:port/db"``: one token for every process and host that
        uses these credentials, encrypted under a key derived from
        ``api_secret`` (needs the ``crypto`` extra).
    :param timeout: seconds per token request attempt.
    :param max_retries: retries of a token request on 429/5xx.
    :param clock: where time comes from: the token's expiry and renewal, and
        the token requests' own retries and waits.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        cache: str | None = None,
        timeout: float = DEFAULT_TOKEN_TIMEOUT,
        max_retries: int = 3,
        clock: Clock = SYSTEM,
    ) -> None:
        if (
            not isinstance(api_key, str)
            or not api_key
            or not isinstance(api_secret, str)
            or not api_secret
        ):
            raise ValueError("api_key and api_secret must be non-empty strings")
        if not isinstance(base_url, str):
            raise TypeError(f"base_url must be a string, not {type(base_url).__name__}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_secret = api_secret
        self.check_hint = (
            f"api_key ({masked(api_key)}, the user's personal key) and api_secret "
            "(the client environment's key)"
        )
        super().__init__(
            f"{self.base_url}/Authorization", timeout=timeout, max_retries=max_retries, clock=clock
        )
        self._share(cache, secret=api_secret, identity=f"bloxs|{self.token_url}|{api_key}")

    def __repr__(self) -> str:
        return f"<BloxsTokenAuth base_url={self.base_url!r} api_key={masked(self.api_key)!r}>"

    def _secrets(self) -> Iterable[str]:
        return (self.api_secret,)

    def asks_for_these_credentials(self, request: PreparedRequest) -> bool:
        """``{"apiKey": ..., "apiSecret": ...}`` with this credential's key and secret."""
        document = _json_body(request.body)
        return (
            isinstance(document, dict)
            and _same(document.get("apiKey"), self.api_key)
            and _same(document.get("apiSecret"), self.api_secret)
        )

    def token_answer(self) -> dict[str, Any]:
        """``{"token": ..., "expiration": ...}``, as ``/Authorization`` answers."""
        token, left = self.current()
        answer: dict[str, Any] = {"token": token}
        if left is not None:
            expires = datetime.fromtimestamp(self.clock.time() + left, timezone.utc)
            answer["expiration"] = expires.isoformat().replace("+00:00", "Z")
        return answer

    def fetch(self) -> tuple[str, float | None]:
        """Ask ``/Authorization`` for a token; its lifetime comes from ``expiration``."""
        response = self._post(json={"apiKey": self.api_key, "apiSecret": self.api_secret})
        document = self._json(response)
        token = document.get("token")
        if not isinstance(token, str) or not token:
            raise TokenResponseError("the /Authorization answer has no token", response=response)
        expires = parse_iso8601(document.get("expiration"))
        if expires is None:
            return token, None
        return token, max(0.0, expires - _reference_time(response, self.clock.time()))


class ClientCredentialsAuth(_EndpointTokenAuth):
    """OAuth2 client-credentials tokens (DealCloud and other OAuth2 APIs).

    Usage::

        >>> auth = rbe.ClientCredentialsAuth(
        ...     "https://acme.dealcloud.com/api/rest/v1/oauth/token",
        ...     CLIENT_ID, CLIENT_SECRET, scope="data")
        >>> rbe.mount(session, "https://acme.dealcloud.com/", auth=auth)

    :param token_url: the token endpoint.
    :param client_id: the client id (DealCloud: the user's client id).
    :param client_secret: the client secret (DealCloud: the API key).
    :param scope: space-separated scopes such as ``"data"``, or None.
    :param cache: None (this process only), or ``"sqlite:///path"`` /
        ``"redis://host:port/db"``: one token for every process and host that
        uses these credentials, encrypted under a key derived from
        ``client_secret`` (needs the ``crypto`` extra).
    :param timeout: seconds per token request attempt.
    :param max_retries: retries of a token request on 429/5xx.
    :param clock: where time comes from: the token's expiry and renewal, and
        the token requests' own retries and waits.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        cache: str | None = None,
        timeout: float = DEFAULT_TOKEN_TIMEOUT,
        max_retries: int = 3,
        clock: Clock = SYSTEM,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        if scope is not None and not isinstance(scope, str):
            raise TypeError("scope must be a space-separated string or None")
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.check_hint = f"client_id ({client_id}) and client_secret" + (
            f", and that the scope {scope!r} is granted" if scope else ""
        )
        super().__init__(token_url, timeout=timeout, max_retries=max_retries, clock=clock)
        self._share(
            cache, secret=client_secret, identity=f"oauth|{token_url}|{client_id}|{scope or ''}"
        )

    def __repr__(self) -> str:
        return (
            f"<ClientCredentialsAuth token_url={redact_url(self.token_url)!r} "
            f"client_id={self.client_id!r} scope={self.scope!r}>"
        )

    def _secrets(self) -> Iterable[str]:
        return (self.client_secret,)

    def asks_for_these_credentials(self, request: PreparedRequest) -> bool:
        """The client-credentials grant for this client id and secret, and this scope."""
        form = _form_body(request.body)
        if form is None:
            return False
        asked = set((form.get("scope") or "").split())
        return (
            form.get("grant_type") == "client_credentials"
            and _same(form.get("client_id"), self.client_id)
            and _same(form.get("client_secret"), self.client_secret)
            and asked == set((self.scope or "").split())
        )

    def token_answer(self) -> dict[str, Any]:
        """``{"access_token": ..., "token_type": "bearer", "expires_in": ...}``."""
        token, left = self.current()
        answer: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if left is not None:
            answer["expires_in"] = int(left)
        return answer

    def fetch(self) -> tuple[str, float | None]:
        """Run the client-credentials grant; the lifetime is ``expires_in``."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        response = self._post(data=form, headers={"Accept": "application/json"})
        document = self._json(response)
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenResponseError("the token answer has no access_token", response=response)
        lifetime = document.get("expires_in")
        try:
            seconds = float(lifetime) if lifetime is not None else None
        except (TypeError, ValueError, OverflowError):
            seconds = None
        if seconds is not None and not math.isfinite(seconds):
            seconds = None  # "NaN", "Infinity": an unknown lifetime, like other garbage
        return token, seconds


def _endpoint_key(url: str) -> str:
    """A URL as an endpoint: origin (default port written out) and path, no query,
    case-folded (the vendors' token paths match in any case)."""
    path = url.split("://", 1)[-1].partition("/")[2].partition("?")[0].partition("#")[0]
    return f"{host_of(url)}/{path.rstrip('/')}".lower()


def _same(given: object, held: str) -> bool:
    """Whether a credential in a request equals the one held (in constant time)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), held.encode())


def _body_text(body: object) -> str | None:
    if isinstance(body, bytes):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return body if isinstance(body, str) else None


def _json_body(body: object) -> object:
    text = _body_text(body)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _form_body(body: object) -> dict[str, str] | None:
    text = _body_text(body)
    if text is None:
        return None
    return {name: values[-1] for name, values in parse_qs(text).items()}


def _location_origin(location: str | None, base: str) -> str:
    """The origin a ``Location`` points to, never its path or query."""
    if not location:
        return "nowhere (no Location header)"
    try:
        return origin(urljoin(base, location))
    except ValueError:
        return "an unparseable Location"


def _secret_forms(secret: str) -> list[bytes]:
    """The ways ``secret`` may appear in a body: as is, JSON-escaped, form-encoded."""
    forms = {
        secret.encode(),
        json.dumps(secret)[1:-1].encode(),
        json.dumps(secret, ensure_ascii=False)[1:-1].encode(),
        quote_plus(secret).encode(),
        quote(secret, safe="").encode(),
    }
    return sorted(forms, key=len, reverse=True)


def _redact_response(response: Response, secrets: list[str]) -> None:
    """Remove ``secrets`` from an error answer of the token endpoint, before anything
    parses it: from the body kept on the response (a secret cut off by the body cap
    included) and from the request body the response points back to."""
    if not secrets:
        return
    first = classify(response)  # the adapter has classified it: was the body cut?
    truncated = first is not None and first.body_truncated
    body, _ = read_error_body(response)
    forms = [form for secret in secrets for form in _secret_forms(secret)]
    for form in forms:
        body = body.replace(form, b"***")
    if truncated:  # the cap may have cut a secret: drop any start of one at the end
        for form in forms:
            for size in range(len(form) - 1, 0, -1):
                if body.endswith(form[:size]):
                    body = body[:-size] + b"***"
                    break
    response._content = body
    if getattr(response, "_bloxs_info", None) is not None:
        response._bloxs_info = None  # type: ignore[attr-defined]  # classify the redacted body
    request = response.request
    if request is not None:
        response.request = request.copy()
        response.request.body = b"*** (the token request, withheld)"


def _reference_time(response: Response, local: float) -> float:
    """ "Now" for an expiry the server stated, on the server's clock: our clock's
    reading within the second its ``Date`` names, else that second's bound.

    The server states the expiry on its own clock, so the lifetime is measured
    from its ``Date``: a server clock ahead of ours would otherwise make the
    token outlive its real expiry, and one behind ours (or a simulator on a
    ``FakeClock``, a credential on the real one) would cut it short, down to a
    token request for every call. ``Date`` has whole seconds only: our reading
    is used when it falls within that second (the clocks agree), and otherwise
    the bound of the second nearer to it. Without a ``Date``, our clock.
    """
    date = response.headers.get("Date")
    server = parse_http_date(date) if date else None
    return local if server is None else min(max(server, local), server + 1.0)


def bloxs_signature(api_key: str, api_secret: str, timestamp: int, payload_size: int) -> str:
    """The Bloxs v1 signature: hex HMAC-SHA256 of ``"{key}:{timestamp}:{size}"``.

    :param timestamp: Unix seconds, as sent in ``x-timestamp``.
    :param payload_size: the body's size in bytes (0 for a GET).
    """
    message = f"{api_key}:{timestamp}:{payload_size}".encode()
    return hmac.new(api_secret.encode(), message, hashlib.sha256).hexdigest()


class BloxsHmacAuth:
    """The Bloxs v1 request signature.

    Every request is signed as ``Authorization: bloxs {api_key}:{signature}``
    with ``x-timestamp``; the adapter signs each attempt again after a wait,
    so a retry after a long ``Retry-After`` never carries a stale timestamp,
    and re-authenticating after a 401 (clock skew) just signs afresh.

    Usage::

        >>> rbe.mount(session, "https://acme.bloxs.io/", auth=rbe.BloxsHmacAuth(KEY, SECRET))
        >>> session.get("https://acme.bloxs.io/Test").raise_for_status()

    :param api_key: the API key.
    :param api_secret: the secret the signature is keyed with.
    :param clock: where the timestamp comes from: a
        :class:`~requests_bloxs_errors.clock.Clock` (its ``time()``), or a
        callable returning Unix time.
    """

    def __init__(
        self, api_key: str, api_secret: str, *, clock: Clock | Callable[[], float] = SYSTEM
    ) -> None:
        if not isinstance(api_key, str) or not api_key or ":" in api_key:
            raise ValueError("api_key must be a non-empty string without ':'")
        if not isinstance(api_secret, str) or not api_secret:
            raise ValueError("api_secret must be a non-empty string")
        self.api_key = api_key
        self.api_secret = api_secret
        self.clock = clock
        self._now: Callable[[], float] = clock.time if isinstance(clock, Clock) else clock

    def __repr__(self) -> str:
        return f"<BloxsHmacAuth api_key={masked(self.api_key)!r}>"

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        self.sign(request)
        return request

    def sign(self, request: PreparedRequest) -> None:
        """Sign ``request`` with the current time."""
        timestamp = int(self._now())
        size = _payload_size(request)
        signature = bloxs_signature(self.api_key, self.api_secret, timestamp, size)
        request.headers["Authorization"] = f"bloxs {self.api_key}:{signature}"
        request.headers["x-timestamp"] = str(timestamp)

    def refresh(self, request: PreparedRequest, response: Response) -> bool:
        """A refused signature is re-made on the resend, with a fresh timestamp."""
        return True


def _payload_size(request: PreparedRequest) -> int:
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return int(length)
    body = request.body
    if isinstance(body, bytes):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    return 0
