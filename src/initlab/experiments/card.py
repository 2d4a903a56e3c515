"""The card framework: a card declares its experiment; the runner does everything else.

A card module reads top to bottom as the experiment it is::

    card = Card("logistic", title=..., claim=..., why=..., data="make_moons(...)",
                sizes=sizes(Config(seeds=10, epochs=1500), tiny={"seeds": 2, "epochs": 200}),
                variants={"zeros": Variant("zeros"), "normal": Variant({"name": "normal"})},
                control=Control(("E6.same-weights",), {"zeros": Variant({"name": "normal",
                                                                      "std": 100.0})}))

    @card.measure
    def measure(run: Run) -> Measured: ...        # trains and probes; returns plain data

    @card.claim("E6.same-weights", "Zero and random init reach the same weights",
                printed="no number printed", uses=("zeros", "normal"))
    def same_weights(m: Measured) -> Outcome: ...  # the verdict, a headline number, evidence

    @card.table("weights")
    def weights(m: Measured) -> list[dict]: ...

    @card.figure("logistic-convergence")
    def convergence(m: Measured, path: Path) -> None: ...

The runner (``experiments.runner``) owns the sizes, the seeds, the schemes applied to their
variants' replicas, timing, tables, figures and interruption; ``Run`` is what ``measure`` sees.
Every claim records the seeds and replicas of the variants it ``uses``, so the report can say
exactly what a verdict rests on. The negative control names a claim and the variants that,
swapped in, must flip it: the test suite runs every card's control.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from initlab.nn.model import Sequential
from initlab.nn.replicas import SweepArgs

Size = Literal["tiny", "default", "full"]
SIZES: tuple[Size, ...] = ("tiny", "default", "full")
M = TypeVar("M")


@dataclass(frozen=True)
class Config:
    """A card's settings. Cards subclass it (frozen) with their own fields; ``seeds`` is how
    many seeds every variant runs, ``context_seeds`` the cap for variants marked context."""

    seeds: int = 10
    context_seeds: int = 3


def sizes(default: Config, **changes: Mapping[str, Any]) -> dict[Size, Config]:
    """The named sizes of a card: ``default`` and, for ``tiny`` and ``full``, the fields they
    change (a size not given is the default)."""
    unknown = set(changes) - set(SIZES)
    if unknown:
        raise ValueError(f"unknown size(s) {sorted(unknown)}; sizes: {', '.join(SIZES)}")
    return {size: dataclasses.replace(default, **changes.get(size, {})) for size in SIZES}


@dataclass(frozen=True)
class Variant:
    """One arm of a card: the weight initializer its replicas are built with (a spec for
    ``Sequential.build``), and a model-level scheme applied to those replicas after build
    (``scheme(model, X)``, X the replicas' own inputs). A context variant runs on the first
    ``Config.context_seeds`` seeds only."""

    init: Any
    scheme: Callable[[Sequential, np.ndarray], Any] | None = None
    context: bool = False
    label: str = ""  # for legends, where the name is terse


@dataclass(frozen=True)
class Outcome:
    """A claim's finding: whether it holds, one line with its headline number, the evidence,
    and, for a card whose replicas are more than its variants x seeds (a grid of networks),
    how many networks it rests on."""

    holds: bool
    headline: str
    evidence: str = ""
    replicas: int | None = None


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    text: str
    printed: str  # what the source printed or said
    judge: Callable[[Any], Outcome]
    uses: tuple[str, ...] | None  # the variants it reads; None: all of the card's


@dataclass(frozen=True)
class Control:
    """A negative control: with ``variants`` swapped in (and ``config`` changed, where a
    variant alone cannot express it), the claims ``flips`` must fail."""

    flips: tuple[str, ...]
    variants: Mapping[str, Variant] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""


class Card(Generic[M]):
    """The declaration of one experiment card (see the module docstring)."""

    def __init__(self, name: str, *, title: str, claim: str, why: str,
                 sizes: Mapping[Size, Config], variants: Mapping[str, Variant],
                 control: Control, data: str = "", max_seeds: int | None = None) -> None:
        if set(sizes) != set(SIZES):
            raise ValueError(f"card {name!r}: sizes must be {', '.join(SIZES)}; got "
                             f"{', '.join(sizes)}")
        self.name, self.title, self.summary, self.why, self.data = name, title, claim, why, data
        self.sizes = dict(sizes)
        self.variants = dict(variants)
        self.control = control
        self.max_seeds = max_seeds
        self.claims: list[ClaimSpec] = []
        self.tables: dict[str, Callable[[M], list[dict[str, Any]]]] = {}
        self.figures: dict[str, Callable[[M, Path], Any]] = {}
        self.measure_fn: Callable[[Run], M] | None = None
        self.notes_fn: Callable[[M], list[str]] = lambda m: []

    def __repr__(self) -> str:
        return f"Card({self.name!r}, {len(self.claims)} claims, variants {list(self.variants)})"

    # --- the decorators a card module declares itself with --------------------------------
    def measure(self, fn: Callable[[Run], M]) -> Callable[[Run], M]:
        self.measure_fn = fn
        return fn

    def claim(self, id: str, text: str, *, printed: str,
              uses: Sequence[str] | None = None) -> Callable[[Callable[[M], Outcome]],
                                                             Callable[[M], Outcome]]:
        unknown = set(uses or ()) - set(self.variants)
        if unknown:
            raise ValueError(f"claim {id!r} uses unknown variant(s) {sorted(unknown)}")

        def register(fn: Callable[[M], Outcome]) -> Callable[[M], Outcome]:
            self.claims.append(ClaimSpec(id, text, printed, fn,
                                         None if uses is None else tuple(uses)))
            return fn
        return register

    def table(self, name: str) -> Callable[[Callable[[M], list[dict[str, Any]]]],
                                           Callable[[M], list[dict[str, Any]]]]:
        def register(fn: Callable[[M], list[dict[str, Any]]]) -> Callable[[M], list[dict]]:
            self.tables[name] = fn
            return fn
        return register

    def figure(self, name: str) -> Callable[[Callable[[M, Path], Any]],
                                            Callable[[M, Path], Any]]:
        def register(fn: Callable[[M, Path], Any]) -> Callable[[M, Path], Any]:
            self.figures[name] = fn
            return fn
        return register

    def notes(self, fn: Callable[[M], list[str]]) -> Callable[[M], list[str]]:
        self.notes_fn = fn
        return fn

    # --- what the runner asks ---------------------------------------------------------------
    def config(self, size: Size, seeds: int | None = None,
               overrides: Mapping[str, Any] | None = None) -> Config:
        """The config of a size, with ``seeds`` and any fields of ``overrides`` it has."""
        if size not in self.sizes:
            raise ValueError(f"size must be one of {', '.join(SIZES)}; got size={size!r}")
        cfg = self.sizes[size]
        if seeds is not None:
            if seeds < 1:
                raise ValueError(f"seeds must be >= 1; got seeds={seeds}")
            if self.max_seeds is not None and seeds > self.max_seeds:
                raise ValueError(f"card {self.name!r} runs at most {self.max_seeds} seeds; "
                                 f"got seeds={seeds}")
            cfg = dataclasses.replace(cfg, seeds=seeds)
        fields = {f.name for f in dataclasses.fields(cfg)}
        known = {k: v for k, v in (overrides or {}).items() if k in fields}
        return dataclasses.replace(cfg, **known) if known else cfg


@dataclass
class Run:
    """What a card's ``measure`` gets: its config, its variants (a control swaps some), the
    seeds, the image data asked for, and a progress callback."""

    card: Card[Any]
    cfg: Any
    variants: dict[str, Variant]
    data: str | None = None
    progress: Callable[[float], None] = lambda fraction: None
    data_used: str = ""  # what data the card used, in words, where it depends on the run
    schemes_done: dict[str, Any] = field(default_factory=dict)  # variant -> what it returned

    @property
    def seeds(self) -> list[int]:
        return list(range(self.cfg.seeds))

    def seeds_of(self, variant: str) -> list[int]:
        """The seeds a variant runs: all of them, or the first context_seeds for context."""
        seeds = self.seeds
        return seeds[:self.cfg.context_seeds] if self.variants[variant].context else seeds

    def labels(self, names: Iterable[str] | None = None) -> list[tuple[str, int]]:
        """(variant, seed) of every replica of a sweep over ``names``, variant-major."""
        return [(name, seed) for name in (names or self.variants) for seed in self.seeds_of(name)]

    def sweep(self, names: Iterable[str] | None = None) -> SweepArgs:
        """``build`` arguments for the replicas of ``names`` (default: every variant): the
        stream of each seed, the variant's init and the coordinates {variant, seed}."""
        labels = self.labels(names)
        return {"rng": [np.random.SeedSequence(seed) for _, seed in labels],
                "variants": [self.variants[name].init for name, _ in labels],
                "coords": [{"variant": name, "seed": seed} for name, seed in labels]}

    def apply_schemes(self, model: Sequential, X: np.ndarray) -> Sequential:
        """Apply every variant's scheme to that variant's replicas (X: per-replica inputs,
        (R, n, d), or one shared (n, d) batch); what each scheme returns (LSUV: its report)
        is kept in ``schemes_done[variant]``."""
        for name, variant in self.variants.items():
            index = model.select(variant=name)
            if variant.scheme is None or not index:
                continue
            sub = model.take(index)
            self.schemes_done[name] = variant.scheme(sub, X[index] if X.ndim == 3 else X)
            model.put(index, sub)
        return model


def pick(labels: Sequence[tuple[str, int]], name: str, values: Any) -> np.ndarray:
    """The entries of ``values`` (one per replica, in ``labels`` order) of variant ``name``."""
    values = np.asarray(values)
    return values[[r for r, (n, _) in enumerate(labels) if n == name]]


def per_epoch_rows(labels: Sequence[tuple[str, int]], costs: np.ndarray, epochs: Sequence[int],
                   names: Iterable[str] | None = None, **fixed: Any) -> list[dict[str, Any]]:
    """The tidy per-epoch table of a cost log (logs, R): one row per logged epoch and variant
    with the mean, std, min and max over its seeds, and the ``fixed`` columns first."""
    rows = []
    for e, epoch in enumerate(epochs):
        for name in names or dict.fromkeys(n for n, _ in labels):
            v = pick(labels, name, costs[e])
            rows.append({**fixed, "variant": name, "epoch": epoch, "mean": float(v.mean()),
                         "std": float(v.std()), "min": float(v.min()), "max": float(v.max())})
    return rows


def spread(values: Any, fmt: str = ".4g", scale: float = 1.0) -> str:
    """'mean ± std [min, max]' of values over seeds; finite-safe (no inf from an overflowing
    std of finite values)."""
    v = np.asarray(values, dtype=float).ravel() * scale
    if v.size == 1:
        return format(v[0], fmt)
    finite = v[np.isfinite(v)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    scale = peak if peak > 1e150 else 1.0  # the squares of finite values would overflow
    mean, std = float(np.mean(v / scale)) * scale, float(np.std(v / scale)) * scale
    return f"{mean:{fmt}} ± {std:{fmt}} [min {np.min(v):{fmt}}, max {np.max(v):{fmt}}]"
