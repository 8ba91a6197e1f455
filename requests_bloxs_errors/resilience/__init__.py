"""The optional steps: pacing to a quota, a circuit breaker, an outbox of failed writes.

``ratelimit`` (``RateLimit``: rules and categories), ``pacing`` (the step
that takes permits and learns from answers), ``breaker`` (a circuit per
host, and its step) and ``outbox`` (failed writes kept for a replay, and
its step). Each is a :class:`~requests_bloxs_errors.Step` on the same
footing as a user's; none is imported until an adapter is given one.

May import: :mod:`..pipeline`, :mod:`..errors`, :mod:`..storage`,
:mod:`..exceptions`, :mod:`..events`, :mod:`..urls`, :mod:`..clock`.
"""
