"""The argument checks of the library, one per kind of mistake, each with one message.

Every check raises ``ValueError`` naming the argument, the value it got and what is accepted, e.g.
``n_pseudo=0 must be an int >= 1`` or ``mask='causal' is not supported; expected one of
['flat', 'token', 'none']``. The library uses these everywhere (the functional core, the module,
the configs, the tasks, the theory checks, the reproductions, training), so that a mistake reads
the same wherever it is caught.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, accepted: Iterable[Any]) -> None:
    """``value`` must be one of ``accepted``."""
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {accepted}")


def check_int(
    name: str, value: Any, minimum: int | None = 1, *, allow_none: bool = False
) -> Any:
    """``value`` must be an int (not a bool) >= ``minimum`` (any int when ``minimum`` is None),
    or None when ``allow_none``.

    Returns ``value``.
    """
    if value is None and allow_none:
        return value
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or (minimum is not None and value < minimum):
        either = "None or " if allow_none else ""
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}={value!r} must be {either}an int{bound}")
    return value


def check_positive_number(name: str, value: Any) -> None:
    """``value`` must be a real number (int or float, not a bool) > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a positive number")


def check_number(name: str, value: Any, minimum: float = 0) -> None:
    """``value`` must be a real number (int or float, not a bool, not NaN) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{name}={value!r} must be a number >= {minimum:g}")


def check_window(window: Any, mask: str) -> None:
    """A sliding window: None, or an int >= 1 (tokens) under mask "flat" or "token"."""
    check_int("window", window, 1, allow_none=True)
    if window is not None and mask == "none":
        raise ValueError("window is only defined for mask='flat' or mask='token', not 'none'")
