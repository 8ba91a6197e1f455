"""One call through the adapter: its steps, its state, and what follows each attempt.

``steps`` (the :class:`~requests_bloxs_errors.Step` protocol, and the one
function that puts the steps of a call in order), ``call`` (one call's
state and journal), ``policy`` (``decide()``: what follows an attempt, a
pure function), ``retry`` (the ``Retry`` value: counters and back-off),
``failures`` (transport exceptions filed under the table's transport rules)
and ``headwait`` (the deadline over the wait for a response's head).

May import: :mod:`..errors`, :mod:`..exceptions`, :mod:`..events`,
:mod:`..urls`, :mod:`..clock`. The features that plug in as steps
(:mod:`..resilience`) are imported only when a call needs them.
"""
