"""The experiment cards, one module each, in the order a report shows them (described in
docs/cards.md, generated from them: ``initlab list --cards``)."""

from __future__ import annotations

import importlib
from typing import Any

from initlab._validate import suggest
from initlab.experiments.card import Card

# card name -> module in this package
MODULES = {
    "moons": "moons",
    "symmetry": "symmetry",
    "deep-linear": "deep_linear",
    "depth": "depth",
    "bias-only": "bias_only",
    "logistic": "logistic",
    "fixup": "fixup",
    "lsuv": "lsuv",
    "gradcheck": "gradcheck",
    "normalization": "normalization",
    "phase": "phase",
}


def names() -> list[str]:
    return list(MODULES)


def get(name: str) -> Card[Any]:
    """The card of a name (its module's ``card``); ValueError with a suggestion if there is
    none."""
    if name not in MODULES:
        raise ValueError(f"unknown card {name!r}{suggest(name, MODULES)}; cards: "
                         f"{', '.join(MODULES)}")
    card: Card[Any] = importlib.import_module(f"initlab.experiments.{MODULES[name]}").card
    return card


def all_cards() -> list[Card[Any]]:
    return [get(name) for name in MODULES]
