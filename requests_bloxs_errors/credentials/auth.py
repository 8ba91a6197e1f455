"""Refreshable credentials: the :class:`Credential` protocol and :class:`TokenAuth`.

A credential is anything with two methods:

``sign(request)``
    Put credentials on a :class:`~requests.PreparedRequest` (a header, a
    signature). Called for every request the adapter sends under its prefix,
    retries and resends included. It may fetch a token first.

``refresh(request, response) -> bool``
    Called once when ``request`` (as signed) was answered 401 or 403. Make
    the next :meth:`sign` produce credentials the server may accept, and
    return True to have the adapter re-sign and resend the request once, or
    False to give up (the 401/403 is then returned or raised as usual).
    Called concurrently from many threads, it must be single-flight: when
    the failed request's credentials are no longer the current ones, another
    thread already refreshed, and it should just return True.

The adapter never sends credentials outside its prefix, and never resends a
request whose body cannot be rewound.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

from requests import PreparedRequest, Response
from requests.auth import AuthBase

from ..clock import SYSTEM, Clock
from ..events import logger
from ..exceptions import AuthenticationError, DeadlineExceeded, TokenResponseError
from . import signing

if TYPE_CHECKING:
    from .tokencache import SharedTokens

__all__ = ["CachedTokenAuth", "Credential", "TokenAuth"]

#: The longest lifetime a token is taken to have, in seconds (a week): an answer of
#: ``expires_in: 1e20`` is renewed weekly, and no store is asked to keep it for ages.
MAX_LIFETIME = 7 * 24 * 3600.0
#: What ``fetch_token`` may return: a token, or a token and its lifetime in seconds.
TokenResult = Union[str, "tuple[str, float | int | None]"]


@runtime_checkable
class Credential(Protocol):
    """What :class:`~requests_bloxs_errors.BloxsAdapter` needs from ``auth``."""

    def sign(self, request: PreparedRequest) -> None:
        """Add credentials to ``request``."""

    def refresh(self, request: PreparedRequest, response: Response) -> bool:
        """Renew after ``request`` was refused with ``response``; True to resend."""


class CachedTokenAuth(AuthBase):
    """Base for bearer-token credentials: caches, renews, single-flight.

    Subclasses implement :meth:`fetch`. The token is fetched on first use,
    again shortly before it expires (10 % of its lifetime early, at most
    60 s), and when the server refuses it. One fetch serves all threads: when
    32 threads find the token expired together, :meth:`fetch` runs once, and
    when it fails, the threads that waited for it get the same error instead
    of calling the token endpoint again one by one. Refused credentials (an
    :class:`~requests_bloxs_errors.AuthenticationError` from :meth:`fetch`)
    and unusable token answers (:class:`~requests_bloxs_errors.TokenResponseError`)
    are remembered for :attr:`REFUSAL_TTL` seconds: a worker pool with a bad
    secret does not use up the token endpoint's own rate limit.

    A renewal that fails while the current token is still valid is not an
    error: the current token stays in use until it really expires, one
    WARNING is logged, and the renewal is tried again every
    :attr:`RENEWAL_RETRY` seconds.

    It is also a plain requests auth (``session.auth = ...``).

    :param header: the header to set.
    :param scheme: the word before the token; ``""`` sends the bare token.
    :param clock: where time comes from (expiry, renewal, remembered refusals).
    """

    #: Seconds a refusal of the credentials is remembered (0: not at all).
    REFUSAL_TTL = 30.0
    #: Seconds between renewal attempts while the current token is still valid.
    RENEWAL_RETRY = 5.0

    def __init__(
        self, *, header: str = "Authorization", scheme: str = "Bearer", clock: Clock = SYSTEM
    ) -> None:
        if not isinstance(header, str) or not header or not isinstance(scheme, str):
            raise TypeError("header must be a non-empty string and scheme a string")
        self.header = header
        self.scheme = scheme
        self.clock = clock
        #: The token cache shared with other processes, or None (this process only).
        self.cache: SharedTokens | None = None
        self._reset()

    def _share(self, cache: object, *, secret: str, identity: str) -> None:
        """Use the shared token cache ``cache`` (a storage URL; None: this process only)."""
        if cache is None or cache == "memory://":
            self.cache = None
            return
        from .tokencache import shared_tokens  # noqa: PLC0415 - loaded when used

        self.cache = shared_tokens(cache, secret=secret, identity=identity, clock=self.clock)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread fetching right now
        self._value: str | None = None  # the full header value
        self._renew_at = math.inf
        self._expires_at = math.inf
        self._fetches = 0
        self._error: BaseException | None = None  # what the last fetch raised
        self._refused_until = -math.inf
        self._renewal_warned = False

    def fetch(self) -> TokenResult:
        """Return a new token, or ``(token, expires_in_seconds)``. Override this."""
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "no token yet" if self._value is None else "token held"
        return f"<{type(self).__name__} header={self.header!r} ({state})>"

    def __getstate__(self) -> dict[str, Any]:
        # a pickled copy fetches its own token: locks and tokens do not travel
        return {k: v for k, v in self.__dict__.items() if k not in _PRIVATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        self.sign(request)
        return request

    def sign(self, request: PreparedRequest) -> None:
        """Set the header, fetching a token first if there is none or it is about to expire.

        :raises DeadlineExceeded: when the call's deadline passes while another
            thread fetches the token.
        :raises RuntimeError: when called from inside this credential's own fetch.
        """
        request.headers[self.header] = self._header_value()

    def _header_value(self) -> str:
        """The header's value, fetching a token first when there is none or it is
        about to expire."""
        value = self._value
        if value is None or self.clock.monotonic() >= self._renew_at:
            seen = self._fetches
            with self._locked():
                if self._value is None or self.clock.monotonic() >= self._renew_at:
                    self._renew(seen)
                value = self._value
        assert value is not None
        return value

    def current(self) -> tuple[str, float | None]:
        """The token in use (fetched first, as for :meth:`sign`) and its seconds left
        (None: unknown). What the adapter answers a script's own token request with.
        """
        value = self._header_value()
        prefix = f"{self.scheme} " if self.scheme else ""
        token = value[len(prefix) :] if value.startswith(prefix) else value
        expires = self._expires_at
        left = None if math.isinf(expires) else max(0.0, expires - self.clock.monotonic())
        return token, left

    def refresh(self, request: PreparedRequest, response: Response) -> bool:
        """Fetch a new token unless another thread (or, with a shared cache,
        another process) already replaced the refused one."""
        refused = request.headers.get(self.header)
        seen = self._fetches
        with self._locked():
            if self._value is None or refused == self._value:
                self._fetch_once(seen, refused)
        return True

    def invalidate(self) -> None:
        """Forget the token; the next request fetches a new one."""
        with self._locked():
            self._value = None
            self._renew_at = self._expires_at = math.inf
            self._error = None
            self._refused_until = -math.inf

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock, waiting no longer than the deadline of the call being signed."""
        if self._owner == threading.get_ident():
            raise RuntimeError(
                f"{type(self).__name__} was asked to sign a request from inside its own token "
                "fetch; send token requests through a session without this credential"
            )
        left = signing.time_left()
        if not self._lock.acquire(timeout=-1 if left is None else left):
            raise DeadlineExceeded(
                f"the deadline passed while another thread fetched the token for "
                f"{type(self).__name__}"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _renew(self, seen: int) -> None:
        """Fetch before expiry; keep a still-valid token when the renewal fails."""
        try:
            self._fetch_once(seen)
        except Exception as exc:
            left = self._expires_at - self.clock.monotonic()
            if self._value is None or left <= 0:
                raise
            if not self._renewal_warned:
                self._renewal_warned = True
                logger.warning(
                    "Renewing the token of %s failed (%s); the current token stays in use "
                    "for its last %.0fs",
                    type(self).__name__,
                    type(exc).__name__,
                    left,
                )
            self._renew_at = self.clock.monotonic() + min(self.RENEWAL_RETRY, left / 2)

    def _fetch_once(self, seen: int, refused: str | None = None) -> None:
        """Fetch under the lock, unless a fetch this thread waited for just failed,
        or the credentials were refused moments ago (then raise a fresh copy of that error)."""
        if self._error is not None and (
            self._fetches != seen or self.clock.monotonic() < self._refused_until
        ):
            raise _fresh(self._error)
        self._fetches += 1
        self._owner = threading.get_ident()
        try:
            token, lifetime = self._obtain(refused)
        except BaseException as exc:
            self._error = exc
            if isinstance(exc, (AuthenticationError, TokenResponseError)):
                self._refused_until = self.clock.monotonic() + self.REFUSAL_TTL
            raise
        finally:
            self._owner = None
        self._error = None
        self._refused_until = -math.inf
        self._renewal_warned = False
        self._value = f"{self.scheme} {token}" if self.scheme else token
        now = self.clock.monotonic()
        if lifetime is None:
            self._renew_at = self._expires_at = math.inf
        else:
            self._expires_at = now + lifetime
            self._renew_at = self._expires_at - min(60.0, lifetime * 0.1)

    def _obtain(self, refused: str | None) -> tuple[str, float | None]:
        """A checked token and its lifetime: fetched, or the fleet's from the shared cache."""
        if self.cache is None:
            return _check_token(self.fetch())
        prefix = f"{self.scheme} " if self.scheme else ""
        if refused is not None and refused.startswith(prefix):
            refused = refused[len(prefix) :]
        return self.cache.obtain(lambda: _check_token(self.fetch()), refused, signing.time_left())


_PRIVATE = frozenset(
    {
        "_lock",
        "_owner",
        "_value",
        "_renew_at",
        "_expires_at",
        "_fetches",
        "_error",
        "_refused_until",
        "_renewal_warned",
    }
)


def _fresh(error: BaseException) -> BaseException:
    """A new exception equal to ``error``, so raising it again grows no traceback.

    A remembered error raised by every call for 30 s would otherwise collect
    every caller's frames (thousands of them) on one shared object.
    """
    try:
        clone = copy.copy(error)
    except Exception:  # an exception type that cannot be rebuilt from its args
        return error.with_traceback(None)
    if type(clone) is not type(error):
        return error.with_traceback(None)
    clone.__traceback__ = None
    return clone


class TokenAuth(CachedTokenAuth):
    """A bearer token from a callable, renewed before expiry and after a 401/403.

    ``fetch_token()`` returns either the token, or ``(token, expires_in)`` with
    the lifetime in seconds (None when unknown). Renewal and single-flight
    behaviour are :class:`CachedTokenAuth`'s.

    Usage::

        >>> def fetch():
        ...     answer = requests.post(TOKEN_URL, json=KEYS, timeout=10).json()
        ...     return answer["access_token"], answer["expires_in"]
        >>> rbe.mount(session, "https://acme.bloxs.io/", auth=rbe.TokenAuth(fetch))

    :param fetch_token: a callable taking no arguments.
    :param cache: None (this process only), or ``"sqlite:///path"`` /
        ``"redis://host:port/db"`` to share one token with other processes
        and hosts (needs the ``crypto`` extra, and ``cache_key``).
    :param cache_key: names the token in a shared cache and keys its
        encryption: a value every process of the credential knows and others
        do not, such as the API secret (it is never stored).
    :param header: the header to set.
    :param scheme: the word before the token; ``""`` sends the bare token.
    :param clock: where time comes from.
    :raises TypeError: if ``fetch_token`` is not callable.
    :raises ValueError: for a shared ``cache`` without ``cache_key``.
    """

    def __init__(
        self,
        fetch_token: Callable[[], TokenResult],
        *,
        cache: str | None = None,
        cache_key: str | None = None,
        header: str = "Authorization",
        scheme: str = "Bearer",
        clock: Clock = SYSTEM,
    ) -> None:
        if not callable(fetch_token):
            kind = type(fetch_token).__name__
            raise TypeError(f"fetch_token must be a callable returning a token, not {kind}")
        self.fetch_token = fetch_token
        super().__init__(header=header, scheme=scheme, clock=clock)
        if cache is not None and cache != "memory://":
            if not isinstance(cache_key, str) or not cache_key:
                raise ValueError(
                    "a shared token cache needs cache_key=: a string every process of this "
                    "credential knows and nobody else does (such as its API secret); it names "
                    "the cached token and keys its encryption"
                )
            self._share(cache, secret=cache_key, identity=f"token|{header}|{cache_key}")

    def fetch(self) -> TokenResult:
        """Call ``fetch_token``."""
        return self.fetch_token()

    def __repr__(self) -> str:
        name = getattr(self.fetch_token, "__qualname__", type(self.fetch_token).__name__)
        state = "no token yet" if self._value is None else "token held"
        return f"<{type(self).__name__} fetch_token={name} header={self.header!r} ({state})>"


def _check_token(result: object) -> tuple[str, float | None]:
    """Validate what a fetch returned: a usable token and a lifetime (None: unknown).

    :raises TypeError: for a result of the wrong type (a bug in ``fetch_token``).
    :raises TokenResponseError: for a token that cannot be sent in a header.
    """
    lifetime: object = None
    if isinstance(result, tuple):
        if len(result) != 2:
            raise TypeError("fetch_token must return a token or (token, expires_in_seconds)")
        result, lifetime = result
    if not isinstance(result, str):
        raise TypeError(f"fetch_token must return a token string, not {type(result).__name__}")
    token = result.strip()
    problem = _token_problem(token)
    if problem is not None:
        raise TokenResponseError(f"the token received is unusable: {problem}")
    if lifetime is None:
        return token, None
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
        kind = type(lifetime).__name__
        raise TypeError(f"expires_in from fetch_token must be seconds or None, not {kind}")
    if not math.isfinite(lifetime):
        return token, None  # NaN or infinity: as good as not stated
    return token, min(max(0.0, float(lifetime)), MAX_LIFETIME)


def _token_problem(token: str) -> str | None:
    """Why ``token`` cannot go into a header, in words that do not repeat it; None if it can."""
    if not token:
        return "it is blank"
    if not token.isprintable():
        return "it contains a line break, NUL or other control character"
    try:
        token.encode("latin-1")
    except UnicodeEncodeError:
        return "it contains characters that HTTP headers cannot carry (not Latin-1)"
    return None
