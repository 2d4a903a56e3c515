"""One sweep task, run wherever an executor puts it: build the replicas of a task's cells,
measure the signal at init, train, evaluate, and return plain rows (one per cell and seed).

Everything a task needs travels in its :class:`~initlab.sweeps.grid.Task` (picklable), and
everything it returns is a list of dicts of numbers and strings, so a process pool and a Dask
worker run the same function.
"""

from __future__ import annotations

import math
import os
import time
from functools import cache
from typing import Any

import numpy as np

from initlab import theory
from initlab.data import Split, image_data, standardize, teacher_student
from initlab.nn import Dense, Sequential
from initlab.sweeps.grid import Task, replica_stream

DATA = ("digits", "fashion-mnist", "teacher")  # or a folder of IDX files
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd"}, "momentum": {"name": "sgd", "momentum": 0.9}, "adam": {"name": "adam"}}
TEACHER = {"features": 32, "classes": 4, "depth": 2, "width": 64, "n_train": 1000,
           "n_test": 500}
FASHION_LIMIT = 10_000  # training images of Fashion-MNIST a sweep uses (the test set: all)


@cache
def load(data: str, sweep_seed: int) -> Split:
    """The task's data, standardised with the training set's statistics; cached per process
    (a worker that runs several tasks loads it once). 'teacher' is drawn from the sweep's seed,
    so every worker draws the same set."""
    if data == "teacher":
        split = teacher_student(**TEACHER, rng=np.random.SeedSequence([sweep_seed, 7]))
    else:
        split = image_data(data, limit=FASHION_LIMIT if data == "fashion-mnist" else None)
    X_train, X_test, _ = standardize(split.X_train, split.X_test)
    return Split(X_train, split.y_train, X_test, split.y_test, split.name, split.source)


@cache
def expected(activation: str, sigma_w2: float, sigma_b2: float) -> dict[str, float]:
    """The mean-field theory of one cell: q*, c*, chi_1 and xi_c (Schoenholz et al. 2017)."""
    w, b = math.sqrt(sigma_w2), math.sqrt(sigma_b2)
    if w == 0:
        return {"q_star": sigma_b2, "c_star": math.nan, "chi1": 0.0, "xi_c": math.nan}
    return {"q_star": theory.fixed_point(activation, w, b),
            "c_star": theory.correlation_fixed_point(activation, w, b),
            "chi1": theory.chi1(activation, w, b),
            "xi_c": theory.depth_scales(activation, w, b)[1]}


def build(task: Task, n_in: int, n_out: int) -> Sequential:
    """depth hidden layers of ``width`` units and a linear readout; replica r of cell
    (sigma_w^2, sigma_b^2) draws weights N(0, sigma_w^2 / fan_in), then biases N(0, sigma_b^2),
    layer by layer, from its own stream (:func:`~initlab.sweeps.grid.replica_stream`)."""
    w = task.where
    grid = task.grid
    layers = [Dense(w["width"], w["activation"]) for _ in range(w["depth"])]
    model = Sequential([*layers, Dense(n_out, "linear")])
    model.compile("softmax_crossentropy", {**OPTIMIZERS[w["optimizer"]],
                                            "learning_rate": grid.learning_rate})
    coords = task.replicas()
    variants = [{"name": "variance_scaling", "scale": c["sigma_w2"], "mode": "fan_in",
                 "distribution": "normal"} for c in coords]
    model.build(n_in, rng=[replica_stream(grid.seed, c) for c in coords], variants=variants,
                coords=coords)
    for r, c in enumerate(coords):  # the biases, after the weights, from the same stream
        std = math.sqrt(c["sigma_b2"])
        for layer in model.layers:
            bias = layer.params[layer.bias_key] if layer.bias_key else None
            if bias is not None:
                bias[r] = std * model.rngs[r].standard_normal(bias.shape[1:])
    return model


def expected_c(activation: str, sigma_w2: float, sigma_b2: float, depth: int, data: str,
               sweep_seed: int, probe: int) -> float:
    """The theory's correlation at the last hidden layer for the probe's input pairs: per pair,
    the correlation map iterated over the depth (each pair at the mean of its two variances),
    then the mean over pairs, as :func:`signal` averages the measurement. NaN where a pair's
    variance leaves (0, 1e300) on the way."""
    if sigma_w2 == 0:
        return math.nan
    walk = _walk(activation, sigma_w2, sigma_b2, data, sweep_seed, probe)
    while len(walk) < depth:  # layer 1's pre-activations are linear in x: walk[0] is its c
        c, q = walk[-1]
        if np.all((q > 0) & (q < 1e300)):
            walk.append(theory.correlation_steps(activation, c, q, math.sqrt(sigma_w2),
                                                 math.sqrt(sigma_b2)))
        else:
            walk.append((np.full_like(c, math.nan), q))
    c, q = walk[depth - 1]
    return float(np.mean(c)) if np.all((q > 0) & (q < 1e300)) else math.nan


@cache
def _walk(activation: str, sigma_w2: float, sigma_b2: float, data: str, sweep_seed: int,
          probe: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The probe's pairs' (c, q) at layer 1, then each deeper layer as :func:`expected_c`
    reaches it: the depths of a sweep share their walk."""
    X = load(data, sweep_seed).X_train[: probe - probe % 2]
    xa, xb = X[0::2], X[1::2]
    qa = sigma_w2 * np.mean(xa**2, axis=1) + sigma_b2
    qb = sigma_w2 * np.mean(xb**2, axis=1) + sigma_b2
    return [((sigma_w2 * np.mean(xa * xb, axis=1) + sigma_b2) / np.sqrt(qa * qb),
             (qa + qb) / 2)]


def signal(model: Sequential, X: np.ndarray, depth: int) -> dict[str, np.ndarray]:
    """At init, per replica: q, the mean square pre-activation of the last hidden layer, and
    c, the correlation of the pre-activations of input pairs (x_0, x_1), (x_2, x_3), ...
    there (q_ab / sqrt(q_aa q_bb), the mean-field definition: no centring), with c_in, the
    same of the inputs themselves."""
    Xp, _ = model.prepare(X)
    with np.errstate(over="ignore", invalid="ignore"):
        model.forward(Xp)
        z = model.traces[depth - 1].z  # (R, n, width)
        q = np.mean(z**2, axis=(1, 2))
        a, b = z[:, 0::2], z[:, 1::2]
        c = np.mean(np.mean(a * b, axis=2) / np.sqrt(np.mean(a**2, axis=2)
                                                     * np.mean(b**2, axis=2)), axis=1)
    xa, xb = X[0::2], X[1::2]
    c_in = float(np.mean(np.mean(xa * xb, axis=1) / np.sqrt(np.mean(xa**2, axis=1)
                                                             * np.mean(xb**2, axis=1))))
    return {"q": q, "c": c, "c_in": np.full(len(q), c_in)}


def run_task(task: Task) -> dict[str, Any]:
    """Train the task's replicas; return ``{"key", "rows", "seconds", "host", "engine"}``, one
    row per (cell, seed) in :meth:`Task.replicas` order."""
    start = time.perf_counter()
    grid, w = task.grid, task.where
    split = load(w["data"], grid.seed)
    classes = split.n_classes
    model = build(task, split.X_train.shape[1], classes)
    probe = split.X_train[: grid.probe - grid.probe % 2]
    at_init = signal(model, probe, w["depth"])
    batch = grid.batch_size if grid.batch_size < len(split.X_train) else None
    model.fit(split.X_train, split.y_train, steps=w["steps"], batch_size=batch,
              log_every=max(1, w["steps"] // 10), workers=task.threads)
    with np.errstate(over="ignore", invalid="ignore"):  # per replica (a lone one: floats)
        train, test = ({k: np.atleast_1d(v) for k, v in model.evaluate(X, y).items()}
                       for X, y in ((split.X_train, split.y_train),
                                    (split.X_test, split.y_test)))
    diverged = np.asarray(model.history.get("diverged", [-1] * model.replicas)) >= 0
    chance = 1.0 / classes
    bar = chance + grid.trainable_at * (1.0 - chance)
    rows = []
    for r, coords in enumerate(model.coords):
        loss = float(train["loss"][r])
        bad = bool(diverged[r]) or not math.isfinite(loss)
        rows.append({
            **coords, "loss": loss, "train_accuracy": float(train["accuracy"][r]),
            "test_accuracy": float(test["accuracy"][r]), "diverged": bad,
            "trainable": bool(not bad and train["accuracy"][r] >= bar),
            "q": float(at_init["q"][r]), "c": float(at_init["c"][r]),
            "c_in": float(at_init["c_in"][r]),
            "c_theory": expected_c(w["activation"], coords["sigma_w2"], coords["sigma_b2"],
                                   w["depth"], w["data"], grid.seed, grid.probe),
            **expected(w["activation"], coords["sigma_w2"], coords["sigma_b2"]),
        })
    return {"key": task.key, "rows": rows, "seconds": time.perf_counter() - start,
            "host": os.uname().nodename, "pid": os.getpid(),
            "engine": model.history["engine"][-1]}
