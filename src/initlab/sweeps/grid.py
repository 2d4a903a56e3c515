"""A sweep's grid: its axes, its cells, and the tasks that train them.

A cell is one point of the grid (activation, sigma_w^2, sigma_b^2, depth, width, data,
optimizer, steps); each cell trains ``seeds`` networks. Cells that differ only in sigma_w^2 or
sigma_b^2 have the same shapes, so a task trains all of them, with all their seeds, as the
replicas of one model: a task is keyed by the other axes. A replica's random stream comes from
the sweep's seed, its cell's key and its seed index alone, so a result does not depend on the
task it ran in, the executor, or the order.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from initlab._validate import check_choice, check_int, check_positive
from initlab.nn import activations

OPTIMIZERS = ("sgd", "momentum", "adam")
# the axes a task trains together as replicas; the others name the task
REPLICA_AXES = ("sigma_w2", "sigma_b2")
TASK_AXES = ("activation", "depth", "width", "data", "optimizer", "steps")


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep (each a tuple of values) and its training settings.

    sigma_w2 and sigma_b2 are variances: weights N(0, sigma_w2 / fan_in), biases
    N(0, sigma_b2), in every layer, the readout included (Schoenholz et al. 2017).
    ``trainable_at`` is the rule of the trainable flag: a network is trainable when its
    training accuracy reaches chance + trainable_at x (1 - chance) and it did not diverge.
    """

    activation: tuple[str, ...] = ("tanh",)
    sigma_w2: tuple[float, ...] = (1.0, 1.76, 4.0)
    sigma_b2: tuple[float, ...] = (0.05,)
    depth: tuple[int, ...] = (5, 10, 20)
    width: tuple[int, ...] = (32,)
    data: tuple[str, ...] = ("digits",)
    optimizer: tuple[str, ...] = ("sgd",)
    steps: tuple[int, ...] = (200,)
    seeds: int = 2
    learning_rate: float = 0.01
    batch_size: int = 128
    probe: int = 64  # inputs passed forward at init to measure q and c (pairs of them)
    trainable_at: float = 0.5
    seed: int = 0  # the sweep's seed: every replica's stream and the teacher data come from it

    def __post_init__(self) -> None:
        for name in (*TASK_AXES, *REPLICA_AXES):
            values = getattr(self, name)
            if isinstance(values, str | int | float):
                values = (values,)
            values = tuple(values)
            if not values:
                raise ValueError(f"the grid's {name} axis is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"the grid's {name} axis repeats a value: {list(values)}")
            object.__setattr__(self, name, values)
        for a in self.activation:
            activations.get(a)  # names the activation if unknown
        for name in ("sigma_w2", "sigma_b2"):
            object.__setattr__(self, name, tuple(check_positive(name, v, allow_zero=True)
                                                 for v in getattr(self, name)))
        for name in ("depth", "width", "steps"):
            object.__setattr__(self, name, tuple(check_int(name, v, minimum=1)
                                                 for v in getattr(self, name)))
        for o in self.optimizer:
            check_choice("optimizer", o, OPTIMIZERS)
        check_int("seeds", self.seeds, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("probe", self.probe, minimum=2)
        check_int("seed", self.seed, minimum=0)
        check_positive("learning_rate", self.learning_rate)
        if not 0 < self.trainable_at < 1:
            raise ValueError(f"trainable_at must be in (0, 1); got "
                             f"trainable_at={self.trainable_at!r}")

    # --- reading and writing ---------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Grid:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown grid key(s) {', '.join(unknown)}; the keys are "
                             f"{', '.join(sorted(known))}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in values.items()}
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> Grid:
        """A grid from a TOML file whose keys are the field names (lists for axes)."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"grid file {path} is not valid TOML: {err}") from None
        return cls.from_dict(values)

    def differences(self, other: Grid) -> list[str]:
        """The fields on which two grids differ, as 'name: a != b'."""
        return [f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    # --- cells and tasks --------------------------------------------------------------------

    @property
    def cells(self) -> int:
        return math.prod(len(getattr(self, a)) for a in (*TASK_AXES, *REPLICA_AXES))

    def tasks(self) -> list[Task]:
        """One task per combination of :data:`TASK_AXES`, deepest and widest first (the long
        tasks start early, so the last to finish is a short one)."""
        combos = itertools.product(*(getattr(self, a) for a in TASK_AXES))
        tasks = [Task(self, dict(zip(TASK_AXES, combo, strict=True))) for combo in combos]
        return sorted(tasks, key=lambda t: -t.cost)


@dataclass(frozen=True)
class Task:
    """The cells of a grid that train as one batched model: fixed values of the task axes,
    every sigma_w^2 x sigma_b^2 x seed as a replica. ``threads`` is how many threads its
    compiled kernels use (None: all cores of the machine it runs on)."""

    grid: Grid
    where: dict[str, Any]
    threads: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """A file-name-safe name of the task's grid coordinates, e.g.
        'tanh-d20-w32-digits-sgd-s200'."""
        w = self.where
        data = "".join(ch if ch.isalnum() else "_" for ch in str(w["data"]))
        return (f"{w['activation']}-d{w['depth']}-w{w['width']}-{data}-{w['optimizer']}"
                f"-s{w['steps']}")

    @property
    def cost(self) -> float:
        """Relative work: depth x width^2 x steps x replicas."""
        w = self.where
        return w["depth"] * w["width"] ** 2 * w["steps"] * len(self.replicas())

    def with_threads(self, threads: int | None) -> Task:
        return replace(self, threads=threads)

    def replicas(self) -> list[dict[str, Any]]:
        """Each replica's coordinates, sigma_w^2-major then sigma_b^2 then seed."""
        g = self.grid
        return [{**self.where, "sigma_w2": w2, "sigma_b2": b2, "seed": s}
                for w2, b2, s in itertools.product(g.sigma_w2, g.sigma_b2, range(g.seeds))]


def cell_key(coords: dict[str, Any]) -> str:
    """A cell's coordinates as one canonical string (floats by repr, so 1.76 != 1.7600001)."""
    return "|".join(f"{a}={coords[a]!r}" for a in (*TASK_AXES, *REPLICA_AXES))


def replica_stream(sweep_seed: int, coords: dict[str, Any]) -> np.random.SeedSequence:
    """The stream of the replica at ``coords`` (a cell's coordinates and ``seed``): from the
    sweep's seed, a hash of the cell's key (stable across processes and machines, unlike
    Python's hash) and the seed index."""
    digest = hashlib.sha256(cell_key(coords).encode()).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence(sweep_seed, spawn_key=(*words, int(coords["seed"])))


def parse_axis(name: str, text: str, kind: type) -> tuple[Any, ...]:
    """An axis from the command line: 'a,b,c' or, for numbers, 'start:stop:count' (count
    evenly spaced values, both ends included: '1:4:13' is 1, 1.25, ..., 4)."""
    text = text.strip()
    if kind is not str and text.count(":") == 2:
        start, stop, count = text.split(":")
        try:
            values = np.linspace(float(start), float(stop), int(count))
        except ValueError:
            raise ValueError(f"--{name.replace('_', '-')} {text!r}: start:stop:count wants "
                             f"two numbers and an int") from None
        if int(count) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {text!r}: count must be >= 1")
        if kind is int:
            if not np.all(values == np.round(values)):
                raise ValueError(f"--{name.replace('_', '-')} {text!r} gives non-integers")
            return tuple(int(v) for v in values)
        return tuple(round(float(v), 12) for v in values)
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')} {text!r}: every value must be "
                         f"{'an int' if kind is int else 'a number'}") from None

