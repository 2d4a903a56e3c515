"""The NumPy engine's replicas split over worker processes, for a fit that asks for them.

The pool's processes are started by a fresh server process (``forkserver``; ``spawn`` where
there is none), never by forking this one: forking a process that holds other libraries'
threads (BLAS, JAX, torch, OpenMP) can deadlock. Each worker trains a contiguous chunk of
replicas with one BLAS thread and sends back plain arrays.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from initlab.nn import optimizers
from initlab.nn.contract import feature_major

if TYPE_CHECKING:
    from initlab.nn.model import Sequential
    from initlab.nn.training import Plan


def context() -> Any:
    """The start method for worker processes: one that does not fork this process."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def fit_in_workers(model: Sequential, X: np.ndarray, y: np.ndarray, plan: Plan,
                   n_workers: int) -> None:
    chunks = [c for c in np.array_split(np.arange(model.replicas), n_workers) if len(c)]
    jobs = [(model.take(list(c)), _part(X, c, model.replicas), _part(y, c, model.replicas),
             plan) for c in chunks]
    with ProcessPoolExecutor(len(chunks), mp_context=context()) as pool:
        parts = list(pool.map(_fit_chunk, jobs))
    for part, chunk in zip(parts, chunks, strict=True):
        for layer, params, buffers in zip(model.layers, part["params"], part["buffers"],
                                          strict=True):
            for key, value in params.items():
                layer.params[key][chunk] = value
            for key, value in buffers.items():
                layer.buffers[key][chunk] = value
        for i, state in zip(chunk, part["rng_states"], strict=True):
            model.rngs[i].bit_generator.state = state
    model.history["epoch"] += parts[0]["epochs"]
    model.history["step"] += parts[0]["steps"]
    model.history["cost"] += list(np.concatenate([p["costs"] for p in parts], axis=1))
    model.epochs_trained += plan.epochs
    model.steps_trained += plan.steps
    assert model.optimizer is not None
    model.optimizer = optimizers.merge_state(model.optimizer, [p["optimizer"] for p in parts])


def _part(a: np.ndarray, chunk: np.ndarray, replicas: int) -> np.ndarray:
    return feature_major(a[chunk]) if a.ndim == 3 and a.shape[0] == replicas else a


def _fit_chunk(job: tuple[Sequential, np.ndarray, np.ndarray, Plan]) -> dict[str, Any]:
    """Train some replicas in a worker; return their new state as plain arrays."""
    from initlab.nn.training import run_numpy

    sub, X, y, plan = job
    logged = len(sub.history["cost"])
    with threadpool_limits(1):  # one BLAS thread per worker: the workers fill the cores
        run_numpy(sub, X, y, plan)
    new_costs = sub.history["cost"][logged:]
    return {"params": [layer.params for layer in sub.layers],
            "buffers": [layer.buffers for layer in sub.layers],
            "rng_states": [gen.bit_generator.state for gen in sub.rngs],
            "epochs": sub.history["epoch"][logged:], "steps": sub.history["step"][logged:],
            "costs": np.stack(new_costs) if new_costs else np.zeros((0, sub.replicas)),
            "optimizer": sub.optimizer}
