"""Run a sweep's tasks on a ``concurrent.futures.Executor`` and keep every result on disk.

The folder of a sweep holds ``sweep.json`` (its grid, written first), ``shards/<task key>.json``
(one per finished task, written atomically as the task finishes), and, once every task is in,
``results.csv`` (one row per cell and seed) and ``theory.csv`` (the mean-field theory on a
fine sigma_w^2 grid, for the heatmaps). A folder that holds a sweep is never started again:
``resume`` continues it, skipping the tasks whose shard exists.

Executors: local worker processes by default (started by a fresh server process, never forked
from this one: :func:`initlab.nn.parallel.context`), or any ``Executor``, such as a Dask
distributed client's (:func:`dask_executor`). A task that fails (a worker killed, a broken pool)
is submitted again, up to ``retries`` times; Dask retries a task whose worker died on its own.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

import initlab
from initlab.sweeps.grid import REPLICA_AXES, TASK_AXES, Grid, Task

MANIFEST = "sweep.json"
COLUMNS = (*TASK_AXES, *REPLICA_AXES, "seed", "loss", "train_accuracy", "test_accuracy",
           "trainable", "diverged", "q", "c", "c_in", "c_theory", "q_star", "c_star", "chi1",
           "xi_c")
THEORY_POINTS = 121  # sigma_w^2 values of theory.csv

Progress = Callable[[int, int, dict[str, Any]], None]  # (done, total, the shard just written)


class SweepFailed(RuntimeError):
    """Some tasks failed even after their retries; the others' shards are on disk."""


def prepare(out: str | Path, grid: Grid | None, *, resume: bool) -> tuple[Path, Grid]:
    """The sweep folder and its grid: a new folder gets ``sweep.json``; ``resume`` reads the
    grid from it (a grid given too must equal it). Refuses to start a sweep in a folder that
    holds one, or in a non-empty folder that is not a sweep."""
    out = Path(out)
    manifest = out / MANIFEST
    if resume:
        if not manifest.is_file():
            raise FileNotFoundError(f"--resume {out}: no {MANIFEST} there, so no sweep to "
                                    f"resume")
        saved = Grid.from_dict(json.loads(manifest.read_text())["grid"])
        if grid is not None and grid != saved:
            raise ValueError(f"--resume {out}: the grid given differs from the saved one ("
                             f"{'; '.join(saved.differences(grid))}); drop the axes or start "
                             f"a new sweep in another folder")
        return out, saved
    if grid is None:
        raise ValueError("a new sweep needs a grid")
    if manifest.is_file():
        raise ValueError(f"{out} holds a sweep already: continue it with "
                         f"`initlab sweep --resume {out}`, or give another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; a sweep writes into "
                         f"a folder of its own")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    _write(manifest, {"grid": grid.as_dict(), "initlab_version": initlab.__version__,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "tasks": len(grid.tasks()),
                      "cells": grid.cells})
    return out, grid


class InlineExecutor(Executor):
    """An executor that runs each task in this thread when it is submitted: ``jobs=1``, with
    no pool to start and Ctrl-C reaching the task at once, through the same code path."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # a KeyboardInterrupt is not caught: it stops the sweep
            future.set_exception(err)
        return future


def local_executor(jobs: int) -> Executor:
    """``jobs`` worker processes that are not forks of this one; 1: this process
    (:class:`InlineExecutor`)."""
    if jobs <= 1:
        return InlineExecutor()
    from initlab.nn.parallel import context

    return ProcessPoolExecutor(jobs, mp_context=context())


@contextlib.contextmanager
def dask_executor(address: str) -> Iterator[Executor]:
    """The ``concurrent.futures.Executor`` of a Dask distributed client connected to the
    scheduler at ``address`` (``pip install "initlab[dask]"``); the client closes at exit."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs Dask distributed: pip install 'initlab[dask]'"
                         ) from None
    with Client(address, timeout=30) as client:
        executor = client.get_executor(pure=False)
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)


def run(grid: Grid | None, out: str | Path, *, executor: Executor | None = None,
        jobs: int = 1, threads: int | None = None, resume: bool = False, retries: int = 2,
        progress: Progress | None = None) -> Path:
    """Run the sweep into ``out`` (see :func:`prepare`) and return the folder.

    Args:
        executor: where tasks run; None: :func:`local_executor` of ``jobs`` processes, shut
            down at the end (a given executor is left open: its owner closes it).
        threads: per task, the compiled kernels' threads (None: all cores of the worker's
            machine; the default with an executor given). Locally, cores // jobs.
        retries: how many times a failed task is submitted again before the sweep gives up
            on it (a :class:`SweepFailed` at the end names it; the others are all kept).
        progress: called as ``progress(done, total, shard)`` after each task.
    """
    out, grid = prepare(out, grid, resume=resume)
    tasks = grid.tasks()
    done = {p.stem for p in (out / "shards").glob("*.json")}
    pending = [t for t in tasks if t.key not in done]
    if executor is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
        threads = threads or max(1, cores // max(1, jobs))
    pending = [t.with_threads(threads) for t in pending]
    owned = executor is None
    pool = executor or local_executor(jobs)
    failures: dict[str, str] = {}
    attempts = dict.fromkeys((t.key for t in pending), 0)
    finished = len(done)
    # tasks in flight at once: enough to keep a local pool busy while results are written
    # (one at a time inline); all of them for a given executor (Dask schedules them)
    window = (1 if jobs <= 1 else 2 * jobs) if owned else max(1, len(pending))
    try:
        running: dict[Future, Task] = {}
        queue = list(pending)
        while queue or running:
            while queue and len(running) < window:
                task = queue.pop(0)
                attempts[task.key] += 1
                try:
                    running[pool.submit(_run_task, task)] = task
                except BrokenProcessPool:  # the pool died under an earlier task
                    queue.insert(0, task)
                    attempts[task.key] -= 1
                    pool = _renew(pool, owned, jobs)
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                task = running.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # a killed worker, a broken pool, a bad task
                    if isinstance(err, BrokenProcessPool):
                        pool = _renew(pool, owned, jobs)
                    if attempts[task.key] <= retries:
                        queue.append(task)
                    else:
                        failures[task.key] = f"{type(err).__name__}: {err}"
                    continue
                _write(out / "shards" / f"{task.key}.json", {**result, "attempts":
                                                             attempts[task.key]})
                finished += 1
                if progress is not None:
                    progress(finished, len(tasks), result)
    finally:
        if owned:
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise SweepFailed(f"{len(failures)} of {len(tasks)} tasks failed after {retries} "
                          f"retries: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
                          + f". The other shards are in {out}/shards; rerun with --resume")
    merge(out)
    return out


def _run_task(task: Task) -> dict[str, Any]:
    from initlab.sweeps.task import run_task

    return run_task(task)


def _renew(pool: Executor, owned: bool, jobs: int) -> Executor:
    """A new local pool for a broken one (a worker process was killed)."""
    if not owned:
        return pool
    pool.shutdown(wait=False, cancel_futures=True)
    return local_executor(jobs)


def _write(path: Path, document: dict[str, Any]) -> None:
    """Write JSON atomically: a reader (or a resume) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=True))
    os.replace(tmp, path)


def rows(out: str | Path) -> list[dict[str, Any]]:
    """Every row of the shards, in the grid's task order, each task's rows in replica order."""
    out = Path(out)
    grid = Grid.from_dict(json.loads((out / MANIFEST).read_text())["grid"])
    found = []
    for task in grid.tasks():
        path = out / "shards" / f"{task.key}.json"
        if path.is_file():
            found += json.loads(path.read_text())["rows"]
    order = {a: {v: i for i, v in enumerate(getattr(grid, a))} for a in (*TASK_AXES,
                                                                       *REPLICA_AXES)}
    return sorted(found, key=lambda r: (*(order[a][r[a]] for a in (*TASK_AXES,
                                                                  *REPLICA_AXES)), r["seed"]))


def merge(out: str | Path) -> Path:
    """Write ``results.csv`` from the shards and ``theory.csv`` beside it; returns the CSV."""
    out = Path(out)
    table = rows(out)
    path = out / "results.csv"
    tmp = path.with_name(".results.csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    os.replace(tmp, path)
    _write_theory(out)
    return path


def _write_theory(out: Path) -> None:
    from initlab.sweeps.task import expected

    grid = Grid.from_dict(json.loads((out / MANIFEST).read_text())["grid"])
    lo, hi = min(grid.sigma_w2), max(grid.sigma_w2)
    fine = sorted({*np.linspace(lo, hi, THEORY_POINTS).round(12).tolist(), *grid.sigma_w2})
    tmp = out / ".theory.csv.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["activation", "sigma_b2", "sigma_w2", "q_star", "c_star", "chi1",
                         "xi_c"])
        for act in grid.activation:
            for b2 in grid.sigma_b2:
                for w2 in fine:
                    if w2 <= 0:
                        continue
                    e = expected(act, float(w2), float(b2))
                    writer.writerow([act, b2, w2, *(e[k] for k in ("q_star", "c_star",
                                                                     "chi1", "xi_c"))])
    os.replace(tmp, out / "theory.csv")


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """A results or theory CSV with its numbers and flags parsed back."""
    def parse(value: str) -> Any:
        if value in ("True", "False"):
            return value == "True"
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value and "e" not in value \
            and math.isfinite(number) else number

    with Path(path).open(newline="") as fh:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]
