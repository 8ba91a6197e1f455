"""Credentials: what signs a request, and where its token comes from.

``auth`` (the ``Credential`` protocol, token caching and renewal,
``TokenAuth``), ``providers`` (Bloxs tokens and HMAC, DealCloud's OAuth2),
``signing`` (what a credential is doing on this thread: the deadline it
works for), ``refusals`` (fresh tokens refused moments ago) and
``tokencache`` (one encrypted token for many processes).

May import: :mod:`..errors`, :mod:`..pipeline`, :mod:`..exceptions`,
:mod:`..events`, :mod:`..urls`, :mod:`..clock`; :mod:`..adapter` and
:mod:`..patch` (token requests go through a retrying session of their own);
:mod:`..storage` only when a shared token cache is configured.
"""
