"""Checks at the boundary: errors that name the argument and the value, and explicit randomness."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")
RngLike = None | int | np.random.SeedSequence | np.random.Generator


def suggest(name: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from None (fresh entropy), an int seed, a SeedSequence or a Generator.

    A Generator is returned as it is (not copied), so draws advance the caller's stream.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, a non-negative int, a numpy SeedSequence or Generator; "
                    f"got rng={rng!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return value as a float if it is finite and > 0 (or >= 0); else name it in a ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {name}={value!r}") from None
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {name}={value!r}")
    return number


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Return value as an int if it is an integer (not a bool) >= minimum; else name it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {name}={value!r}")
    return int(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return value if it is one of choices; else a ValueError with a suggestion."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {name}={value!r}"
                         f"{suggest(value, choices)}")
    return value  # type: ignore[return-value]


def check_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """float32 or float64, the two precisions the engine computes in."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got dtype={dtype!r}")
    return dt


def from_registry(spec: object, registry: Mapping[str, type[T]], aliases: dict[str, str],
                  kind: str, **defaults: object) -> T:
    """Build a registered class from a name or a ``{"name": ..., **params}`` mapping.

    Names are case-insensitive and may be aliases; an unknown name or parameter is a ValueError
    that names it (with the closest name). ``defaults`` fill parameters the spec leaves out.
    """
    params: dict[str, object] = {}
    if isinstance(spec, Mapping):
        params = {k: v for k, v in spec.items() if k != "name"}
        spec = spec.get("name")
    if not isinstance(spec, str):
        raise TypeError(f"{kind} must be a name or a mapping with 'name'; got {kind}={spec!r}")
    key = aliases.get(spec.lower(), spec.lower())
    if key not in registry:
        raise ValueError(f"unknown {kind}={spec!r}{suggest(key, [*registry, *aliases])}; "
                         f"choose from {', '.join(sorted(registry))}")
    try:
        return registry[key](**{**defaults, **params})
    except TypeError as err:
        raise ValueError(f"{kind} {key!r}: {err}") from None
