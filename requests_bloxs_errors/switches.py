"""The words an on/off environment variable takes: one list, wherever one is read.

``RBE_TELEMETRY`` (read by every adapter) and ``run``'s on/off variables
(``RBE_RAISE_ERRORS``, ...) accept the same spellings, and their help and
errors print the same phrase, :data:`SWITCH_WORDS`.
"""

from __future__ import annotations

from .urls import safe_for_message

__all__ = ["OFF_WORDS", "ON_WORDS", "SWITCH_WORDS", "switch"]

#: The words that switch an on/off variable on, and off.
ON_WORDS = ("on", "1", "true", "yes")
OFF_WORDS = ("off", "0", "false", "no")
#: :data:`ON_WORDS` and :data:`OFF_WORDS` as help and errors write them.
SWITCH_WORDS = (
    f"{ON_WORDS[0]} or {OFF_WORDS[0]} (or "
    + ", ".join(f"{on}/{off}" for on, off in zip(ON_WORDS[1:], OFF_WORDS[1:], strict=True))
    + ")"
)


def switch(name: str, value: str) -> bool:
    """The variable ``name``'s ``value``: True for one of :data:`ON_WORDS`, False for
    one of :data:`OFF_WORDS` (any case, spaces around ignored).

    :raises ValueError: for any other value, in one line naming the variable
        (the value as :func:`~.urls.safe_for_message` prints it).
    """
    lowered = value.strip().lower()
    if lowered in ON_WORDS:
        return True
    if lowered in OFF_WORDS:
        return False
    shown = safe_for_message(value).strip("'")
    raise ValueError(f"{name} must be {SWITCH_WORDS}, not {shown!r}")
