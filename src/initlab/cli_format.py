"""Number and path formatting shared by the ``initlab`` commands."""

from __future__ import annotations

from pathlib import Path


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3g}"  # NaN prints as '-'


def percent(fraction: float) -> str:
    """A fraction as a percentage, '-' for NaN (no such quantity for this layer)."""
    return "-" if fraction != fraction else f"{fraction:.0%}"


def fresh(folder: str, name: str) -> Path:
    """folder/name, or folder/name-2... if that exists: results are never overwritten."""
    path = Path(folder) / name
    stem, suffix, k = path.stem, path.suffix, 2
    while path.exists():
        path, k = path.with_name(f"{stem}-{k}{suffix}"), k + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
