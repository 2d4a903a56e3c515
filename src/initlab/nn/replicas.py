"""A sweep's replicas and their coordinates: which variant and seed each replica of a
variants x seeds sweep is, and the ``build`` arguments that lay it out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

Coordinates = dict[str, Any]


def replica_labels(variants: Mapping[str, Any], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(variant, seed) for each replica of a variant-major sweep, as :func:`sweep` lays it out."""
    return [(name, seed) for name in variants for seed in seeds]


class SweepArgs(TypedDict):
    """The keyword arguments :func:`sweep` gives ``build``."""

    rng: list[np.random.SeedSequence]
    variants: list[Any]
    coords: list[Coordinates]


def sweep(variants: Mapping[str, Any], seeds: Sequence[int]) -> SweepArgs:
    """Arguments for ``build`` of a variants x seeds sweep, variant-major: replica
    ``v * len(seeds) + s`` uses variant v and ``SeedSequence(seeds[s])``, so every variant of
    a seed starts from the same stream (and the same data, if drawn from it); each replica's
    coordinates are ``{"variant": name, "seed": seed}``."""
    labels = replica_labels(variants, seeds)
    return {"rng": [np.random.SeedSequence(seed) for _, seed in labels],
            "variants": [variants[name] for name, _ in labels],
            "coords": [{"variant": name, "seed": seed} for name, seed in labels]}
