"""Benchmark: initlab's compiled engine against JAX, a plain PyTorch loop and the GEMM floor.

Two workloads, each timed in ONE process with its variants interleaved: every round times
every variant once, a ratio is taken within each round and the median of the rounds is
reported (as ``bench/moons_replicas.py``, whose moons set-up this script imports), so that a
slow spell of this shared machine hits the variants of a round alike.

W2  the moons network, 2 -> 12 ReLU -> 6 ReLU -> 1 (binary cross-entropy from the logits),
    full-batch SGD, learning rate 0.01, float64, 400 points of make_moons(noise=0.2,
    random_state=0), 30 replicas (3 inits x 10 seeds), 15,000 epochs (``--epochs``).
W4  a deep cell of a phase-diagram sweep: 20 replicas (seeds) of 64 -> 50 tanh layers of
    width 128 -> 10 (softmax cross-entropy from the logits), lecun_normal weights (sigma_w = 1,
    sigma_b = 0: the tanh edge of chaos), minibatch SGD, batch 128, learning rate 0.01,
    float64, 320 steps = 32 epochs of 10 batches of 1280 Gaussian points (rng seed 0),
    initlab with ``shuffle=False`` so that every variant does the same work. ``--steps``
    defaults to 320 scaled by ``--epochs / 15000`` (a quick W2 run is a quick W4 run).

Variants: ``initlab`` (``fit(engine="numba")``; where ``fit`` has no ``engine=`` yet, plain
``fit``, labelled so), ``initlab-numpy`` (``engine="numpy"``), ``jax``, ``torch`` (W2 only:
30 nn.Sequential models one after another, SGD, BCEWithLogitsLoss; timed on epochs / 20 and
extrapolated linearly per epoch) and ``floor``: the workload's FLOPs at the machine's float64
GEMM rate (numpy 2048 x 2048 @ 2048 x 2048, best of 3, all cores, measured in every round).
FLOPs count the training products only: per layer, per sample, 2 fan_in units for the forward,
as much for dW and for dx (no dx for the first layer); W2 is 101.5 GFLOP at full size.

JAX, x64, each epoch loop inside one jit with a static trip count, ``jax.grad`` (not
value_and_grad) in the loop and the costs only at the end; compile time (``.lower().compile()``)
is kept out of the timed runs and reported. The formulations tried (prototypes, each set timed
round-robin in one process; this machine, shared, 2 cores; seconds scaled to the full size):

* W2, feature-major (W @ x, x of shape (features, samples)), 3,000 epochs, 3 rounds, two
  runs: fori_loop + vmap(grad) 20.8 / 22.2 s, the same with donate_argnums - / 23.5 s;
  fori_loop + batched einsum (grad of the sum of the replicas' losses) 20.8 / 22.5 s, donated
  - / 21.5 s; lax.scan + donate_argnums, unroll=1: 20.7 / 21.6 s (vmap), 20.8 / 24.1 s
  (einsum); unroll=4: 21.9 / 21.5 s, 21.7 / 21.7 s; unroll=16: 21.9 / 22.8 s, 22.1 / 23.0 s;
  scan without donation 22.4 / 21.7 s. No consistent winner: the spread is this machine's
  noise. Slower: the dots as broadcast-multiply + sum (fan_in is tiny) 59 s, sample-major
  (x W) 28 s, where fori + vmap took 21 s. Kept: fori_loop + vmap(grad), donate_argnums (the
  trained params are returned, so the donated buffers are used). Not formulations, not used
  here: YNNPACK fusions off (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-dot,-reduce,
  -eltwise``), alternated with the default three times: 23.8 / 22.3 / 19.2 s against 24.1 /
  22.4 / 18.3 s; xnnpack, onednn, fast-math or one Eigen thread: slower; pinned to one core
  (taskset): 15.3 / 19.4 s against 18.9 / 19.7 s on both cores.
* W4, 10 steps, scaled to 320: per-layer parameters with the 51 layers unrolled in the loss,
  vmap(grad): fori_loop 221 s, lax.scan over epochs of a scan over the pre-sliced batches
  202 s; batched einsum instead of vmap 248 s; the 49 hidden layers stacked (49, R, 128, 128)
  and a lax.scan over them 206 s (stacked replica-first, (R, 49, 128, 128), a transpose per
  step: 221-228 s, fori or scan, vmap or einsum). All 16-20 GFLOP/s, against 30-40 GFLOP/s
  for a lone batched 128^3 dot: XLA runs W^T @ dz (a transposed-lhs dot) at ~19 GFLOP/s.
  Kept: scan of scans + vmap(grad), per-layer parameters, donate_argnums.

initlab's kernels compile in subprocesses, timing ``import initlab.nn.kernels;
initlab.nn.kernels.warm_up()`` after ``import numpy``: cold (a fresh NUMBA_CACHE_DIR) and then
from that cache, in wall time (the goals) and in the process's CPU time, which leaves out the
time spent waiting for a core of this shared machine (the compile runs on one thread); one pair
per round, each cold in a fresh cache, judged on the round of the median total.

Sanity: mean final costs, numba against numpy (the same draws: ~1e-9 or
better; per init for W2, whose "large" replicas amplify rounding: their numba - numpy gap was
2e-13 after 1 epoch, 1e-10 at 30, 1e-5 at 50, 82 at 100, and the NumPy engine against itself
on inputs moved by one ulp parts alike: 2e-13, 5e-11, 4e-6, 14), JAX and torch (their own
draws: only close).

Run:  python bench/engine.py [--workload W2,W4] [--rounds 3] [--epochs 15000] [--steps 320]
                             [--skip torch,...] [--json results.json]
The numbers are wall times on this machine: the ratios matter, not the absolute values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from moons_replicas import INITS, LABELS, LR, SEEDS, SIZES, initlab_net, make_torch, scale_of
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_moons

from initlab.nn import Dense, Sequential, sweep

W2_EPOCHS = 15000
W4_CELL = dict(replicas=20, inputs=64, width=128, depth=50, classes=10, samples=1280, batch=128,
          steps=320)
_IN, _WIDTH, _OUT = W4_CELL["inputs"], W4_CELL["width"], W4_CELL["classes"]
W4_SIZES = [(_IN, _WIDTH)] + [(_WIDTH, _WIDTH)] * (W4_CELL["depth"] - 1) + [(_WIDTH, _OUT)]
TORCH_FRACTION = 20  # torch trains epochs / 20 and is extrapolated
TARGETS = {  # per workload: (what, the variant, compare, threshold)
    "W2": [("initlab vs jax (jax s / initlab s)", "jax", ">=", 3.0),
           ("initlab vs torch loop (torch s / initlab s)", "torch", ">=", 50.0),
           ("initlab vs floor (initlab s / floor s)", "floor", "<=", 3.0)],
    "W4": [("initlab vs jax (jax s / initlab s)", "jax", ">=", 1.2),
           ("initlab GFLOP/s / GEMM GFLOP/s (floor s / initlab s)", "floor", ">=", 0.5)],
}
KERNEL_TARGETS = {"cold": 5.0, "cached": 0.5}


def train_flops(sizes: list[tuple[int, int]], samples: int) -> int:
    """Multiply-add FLOPs of one training pass over ``samples`` samples of one replica."""
    flops = 0
    for i, (fan_in, units) in enumerate(sizes):
        product = 2 * samples * fan_in * units
        flops += 2 * product + (product if i > 0 else 0)  # forward, dW, dx (none for layer 0)
    return flops


def gemm_rate(n: int = 2048, repeats: int = 3) -> float:
    """The machine's float64 GEMM rate in FLOP/s: numpy n x n @ n x n, best of ``repeats``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# --- the timing harness ---------------------------------------------------------------------

@dataclass
class Variant:
    """``run()`` is the timed call and returns the per-replica final costs; ``warm()`` runs
    before the rounds, untimed (compiles); ``extrapolate`` multiplies the measured time;
    ``modelled`` replaces the timed run by a computed time (the floor)."""
    label: str
    run: Callable[[], np.ndarray | None]
    warm: Callable[[], Any] | None = None
    extrapolate: float = 1.0
    modelled: Callable[[], float] | None = None
    note: str = ""
    compile_s: float | None = None


def time_rounds(variants: dict[str, Variant], rounds: int, title: str):
    """Warm every variant, then ``rounds`` rounds each timing every variant once."""
    for key, v in variants.items():
        if v.warm is not None:
            start = time.perf_counter()
            v.warm()
            if v.compile_s is None:
                v.compile_s = time.perf_counter() - start
            print(f"{title} warm-up {key}: {time.perf_counter() - start:.2f} s", flush=True)
    times: dict[str, list[float]] = {key: [] for key in variants}
    costs: dict[str, np.ndarray | None] = {}
    for round_ in range(rounds):
        for key, v in variants.items():
            if v.modelled is not None:
                costs[key], seconds = None, v.modelled()
            else:
                start = time.perf_counter()
                costs[key] = v.run()
                seconds = (time.perf_counter() - start) * v.extrapolate
            times[key].append(seconds)
            print(f"{title} round {round_ + 1}/{rounds} {key}: {seconds:.3f} s", flush=True)
    return times, costs


def summarize(variants, times, costs, reference: str) -> dict[str, dict]:
    results = {}
    for key, v in variants.items():
        ratios = [t / r for t, r in zip(times[key], times[reference], strict=True)]
        results[key] = {"label": v.label, "note": v.note, "seconds": times[key],
                        "median_s": statistics.median(times[key]),
                        f"ratios_vs_{reference}": ratios,
                        "ratio_vs_reference": statistics.median(ratios),
                        "compile_s": v.compile_s, "extrapolate": v.extrapolate,
                        "final_costs": None if costs[key] is None else costs[key].tolist()}
    return results


# --- initlab --------------------------------------------------------------------------------

def fit_on(model: Sequential, X, y, engine: str, **kwargs) -> str | None:
    """``model.fit(..., engine=engine)``, or a plain fit where fit has no ``engine=`` yet.
    Returns the engine that ran as ``model.history`` records it, or None for a plain fit."""
    try:
        model.fit(X, y, engine=engine, **kwargs)
    except TypeError as exc:  # raised at the call, before any work: nothing trained yet
        if "engine" not in str(exc):
            raise
        model.fit(X, y, **kwargs)
        return None
    ran = model.history.get("engine") if isinstance(model.history, dict) else None
    return str(ran[-1]) if ran else engine


def initlab_variant(engine: str, build: Callable[[], Sequential], X, y, warm_X, warm_y,
                    **fit_args) -> Variant:
    """``build()`` makes a compiled, built model; the timed run is build + fit + evaluate."""
    v = Variant(label=f"fit(engine={engine!r})", run=lambda: None)

    def run(X=X, y=y, args=fit_args):
        model = build()
        ran = fit_on(model, X, y, engine, **args)
        if ran is None:
            v.label, v.note = "fit() (no engine= yet)", "fit has no engine=: its default ran"
        else:
            v.note = f"ran: {ran}"
        return np.atleast_1d(np.asarray(model.evaluate(X, y)["loss"], dtype=float))

    v.run = run
    v.warm = lambda: run(warm_X, warm_y, {**fit_args, "epochs": 1})
    return v


def w2_initlab_model() -> Sequential:
    model = initlab_net().compile("binary_crossentropy")
    return model.build(2, **sweep(INITS, seeds=SEEDS))


def w4_initlab_model() -> Sequential:
    layers = [Dense(units, "tanh" if i < len(W4_SIZES) - 1 else "linear", init="lecun_normal")
              for i, (_, units) in enumerate(W4_SIZES)]
    model = Sequential(layers).compile("softmax_crossentropy")
    return model.build(W4_CELL["inputs"], rng=[np.random.SeedSequence(s)
                                          for s in range(W4_CELL["replicas"])])


# --- JAX ------------------------------------------------------------------------------------

def _jax():
    import jax  # ImportError: the variant is skipped

    jax.config.update("jax_enable_x64", True)
    return jax, jax.numpy, jax.lax


def jax_w2(X, y, epochs: int) -> Variant:
    """Feature-major, vmap(grad) over the replica axis, the epochs in one fori_loop."""
    jax, jnp, lax = _jax()
    x, t = jnp.asarray(X.T), jnp.asarray(y[None, :], dtype=jnp.float64)  # (2, n), (1, n)

    def loss(params, x, t):  # one replica; W (units, fan_in), b (units, 1)
        a = x
        for i, (W, b) in enumerate(params):
            z = W @ a + b
            a = jax.nn.relu(z) if i < len(params) - 1 else z
        return jnp.mean(jnp.logaddexp(0.0, z) - t * z)  # BCE from the logits

    grads = jax.vmap(jax.grad(loss), in_axes=(0, None, None))

    def train(params, x, t):
        def epoch(_, p):
            return jax.tree_util.tree_map(lambda w, g: w - LR * g, p, grads(p, x, t))
        params = lax.fori_loop(0, epochs, epoch, params)
        return params, jax.vmap(loss, in_axes=(0, None, None))(params, x, t)

    def init_one(key, scales):  # N(0, 1) x the init's std, biases 0, as moons_replicas
        params = []
        for (fan_in, units), scale in zip(SIZES, scales, strict=True):
            key, sub = jax.random.split(key)
            w = jax.random.normal(sub, (units, fan_in), dtype=jnp.float64)
            params.append((w * scale, jnp.zeros((units, 1), jnp.float64)))
        return params

    keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in LABELS])
    scales = jnp.asarray([[scale_of(init, f) for f, _ in SIZES] for init, _ in LABELS])
    return _jax_variant(jax, init_one, keys, scales, train, (x, t),
                        "fori_loop, vmap(grad), feature-major, donated")


def jax_w4(Xb, Yb, steps: int) -> Variant:
    """Per-layer params, vmap(grad), a scan over epochs of a scan over the pre-sliced batches."""
    jax, jnp, lax = _jax()
    xb, yb = jnp.asarray(Xb), jnp.asarray(Yb)  # (batches, features, batch), one-hot targets
    batches = xb.shape[0]

    def loss(params, x, t):  # one replica, feature-major; softmax cross-entropy from logits
        a = x
        for i, (W, b) in enumerate(params):
            z = W @ a + b
            a = jnp.tanh(z) if i < len(params) - 1 else z
        return jnp.mean(jax.nn.logsumexp(z, axis=0) - jnp.sum(z * t, axis=0))

    grads = jax.vmap(jax.grad(loss), in_axes=(0, None, None))

    def train(params, xb, yb):
        def step(p, batch):
            g = grads(p, *batch)
            return jax.tree_util.tree_map(lambda w, d: w - LR * d, p, g), None

        def epoch(p, _):
            return lax.scan(step, p, (xb, yb))[0], None

        params = lax.scan(epoch, params, None, length=steps // batches)[0]
        x_all = jnp.concatenate(list(xb), axis=1)
        t_all = jnp.concatenate(list(yb), axis=1)
        return params, jax.vmap(loss, in_axes=(0, None, None))(params, x_all, t_all)

    def init_one(key):  # lecun_normal: N(0, 1 / fan_in), biases 0
        params = []
        for fan_in, units in W4_SIZES:
            key, sub = jax.random.split(key)
            w = jax.random.normal(sub, (units, fan_in), dtype=jnp.float64) / np.sqrt(fan_in)
            params.append((w, jnp.zeros((units, 1), jnp.float64)))
        return params

    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(W4_CELL["replicas"])])
    return _jax_variant(jax, init_one, keys, None, train, (xb, yb),
                        "scan of scans, vmap(grad), per-layer params, donated")


def _jax_variant(jax, init_one, keys, scales, train, data, note) -> Variant:
    args = (keys,) if scales is None else (keys, scales)
    init = jax.jit(jax.vmap(init_one))
    state = {}

    def warm():  # compile both, untimed; the train compile is what compile_s reports
        params = init(*args)
        start = time.perf_counter()
        state["train"] = jax.jit(train, donate_argnums=0).lower(params, *data).compile()
        v.compile_s = time.perf_counter() - start

    def run():
        # the params are donated (their buffers become the trained ones): a fresh init per run
        _, costs = state["train"](init(*args), *data)
        return np.asarray(costs.block_until_ready())

    v = Variant(label="jax.jit, x64", run=run, warm=warm, note=note)
    return v


# --- the workloads --------------------------------------------------------------------------

def floor_variant(flops: float, rates: list[float]) -> Variant:
    def modelled():
        rates.append(gemm_rate())
        return flops / rates[-1]
    return Variant(label="FLOPs / GEMM rate", run=lambda: None, modelled=modelled)


def w2(args, skip: set[str]) -> dict:
    epochs = args.epochs
    X, y = make_moons(n_samples=400, noise=0.2, random_state=0)
    flops = train_flops(SIZES, len(X)) * len(LABELS) * epochs
    variants: dict[str, Variant] = {}
    for engine, key in (("numba", "initlab"), ("numpy", "initlab-numpy")):
        variants[key] = initlab_variant(engine, w2_initlab_model, X, y, X, y,
                                        learning_rate=LR, epochs=epochs, log_every=None)
    variants["jax"] = _maybe(lambda: jax_w2(X, y, epochs))
    torch_epochs = max(1, epochs // TORCH_FRACTION)
    torch_run = _maybe(lambda: make_torch(X, y))
    if torch_run is not None:
        variants["torch"] = Variant(
            label="nn.Sequential loop", run=lambda: torch_run(torch_epochs),
            warm=lambda: torch_run(1), extrapolate=epochs / torch_epochs,
            note=f"EXTRAPOLATED: timed on {torch_epochs} epochs, x {epochs / torch_epochs:g}")
    rates: list[float] = []
    variants["floor"] = floor_variant(flops, rates)
    out = run_workload("W2", variants, skip, args.rounds)
    groups = {init: [i for i, (name, _) in enumerate(LABELS) if name == init] for init in INITS}

    def by_init(costs) -> dict[str, float]:
        costs = np.asarray(costs)
        return {"all": float(np.mean(costs)),
                **{init: float(np.mean(costs[index])) for init, index in groups.items()}}

    sanity = {key: by_init(c) for key, r in out["results"].items()
              if (c := r["final_costs"]) is not None}
    if "torch" in out["results"]:  # torch's costs are at torch_epochs: compare like with like
        ref = w2_initlab_model()
        fit_on(ref, X, y, "numpy", learning_rate=LR, epochs=torch_epochs, log_every=None)
        sanity[f"initlab-numpy at {torch_epochs} epochs (for torch)"] = by_init(
            ref.evaluate(X, y)["loss"])
        sanity[f"torch at {torch_epochs} epochs"] = sanity.pop("torch")
    diff = numba_vs_numpy(out["results"])
    if diff is not None:  # per init: the large replicas amplify rounding (see the README)
        out["numba_vs_numpy_max_abs"] = {init: float(np.max(diff[index]))
                                         for init, index in groups.items()}
    out.update(epochs=epochs, torch_epochs=torch_epochs, gflop=flops / 1e9,
               gemm_gflops=[r / 1e9 for r in rates], sanity=sanity)
    return out


def w4_data():
    """Gaussian inputs and uniform labels from a fixed rng, pre-sliced into feature-major
    batches for JAX (batch i holds samples [128 i, 128 (i + 1)), as initlab's shuffle=False)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((W4_CELL["samples"], W4_CELL["inputs"]))
    y = rng.integers(0, W4_CELL["classes"], W4_CELL["samples"])
    nb, bs = W4_CELL["samples"] // W4_CELL["batch"], W4_CELL["batch"]
    Xb = X.reshape(nb, bs, -1).transpose(0, 2, 1)
    Yb = np.eye(W4_CELL["classes"])[y].reshape(nb, bs, -1).transpose(0, 2, 1)
    return X, y, Xb, Yb


def w4(args, skip: set[str]) -> dict:
    steps = args.steps
    X, y, Xb, Yb = w4_data()
    flops = train_flops(W4_SIZES, W4_CELL["batch"]) * W4_CELL["replicas"] * steps
    epochs = steps // len(Xb)
    variants: dict[str, Variant] = {}
    for engine, key in (("numba", "initlab"), ("numpy", "initlab-numpy")):
        variants[key] = initlab_variant(  # warm-up: one step, on the first batch
            engine, w4_initlab_model, X, y, X[:W4_CELL["batch"]], y[:W4_CELL["batch"]],
            learning_rate=LR, epochs=epochs, batch_size=W4_CELL["batch"], shuffle=False,
            log_every=None)
    variants["jax"] = _maybe(lambda: jax_w4(Xb, Yb, steps))
    rates: list[float] = []
    variants["floor"] = floor_variant(flops, rates)
    out = run_workload("W4", variants, skip, args.rounds)
    sanity = {key: {"all": float(np.mean(r["final_costs"]))}
              for key, r in out["results"].items() if r["final_costs"] is not None}
    diff = numba_vs_numpy(out["results"])
    if diff is not None:
        out["numba_vs_numpy_max_abs"] = {"all": float(np.max(diff))}
    out.update(steps=steps, epochs=epochs, gflop=flops / 1e9, sanity=sanity,
               gemm_gflops=[r / 1e9 for r in rates])
    return out


def numba_vs_numpy(results: dict) -> np.ndarray | None:
    """|final cost, engine=numba - engine=numpy| per replica (the same draws)."""
    costs = [results.get(key, {}).get("final_costs") for key in ("initlab", "initlab-numpy")]
    return None if None in costs else np.abs(np.subtract(*costs))


def _maybe(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ImportError as exc:
        print(f"skipped: {exc.name} not installed")
        return None


def run_workload(name: str, variants: dict, skip: set[str], rounds: int) -> dict:
    variants = {k: v for k, v in variants.items() if v is not None and k not in skip}
    reference = "initlab" if "initlab" in variants else "initlab-numpy"
    times, costs = time_rounds(variants, rounds, name)
    results = summarize(variants, times, costs, reference)
    targets = []
    for what, key, compare, threshold in TARGETS[name]:
        if key not in results or reference not in results:
            continue
        ratios = results[key][f"ratios_vs_{reference}"]
        if compare == "<=":  # initlab / floor: the inverse ratio, per round
            ratios = [1 / r for r in ratios]
        value = statistics.median(ratios)
        met = value >= threshold if compare == ">=" else value <= threshold
        targets.append({"target": what, "value": value, "rounds": ratios, "compare": compare,
                        "threshold": threshold, "verdict": "PASS" if met else "MISS",
                        "reference": results[reference]["note"]})
    return {"rounds": rounds, "reference": reference, "results": results, "targets": targets}


# --- the kernels' compile time --------------------------------------------------------------

_KERNEL_PROBE = """
import json, time
import numpy
start, cpu = time.perf_counter(), time.process_time()
try:
    import initlab.nn.kernels
    imported = time.perf_counter()
    initlab.nn.kernels.warm_up()
except (ImportError, AttributeError) as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
else:
    end = time.perf_counter()
    print(json.dumps({"total_s": end - start, "import_s": imported - start,
                      "warm_up_s": end - imported, "cpu_s": time.process_time() - cpu}))
"""

# numba's own floor for "from the cache": import numba, then the first call of a function
# that adds 1, loaded from numba's cache (cache=True), in a process of its own
_FLOOR_MODULE = """
import numba


@numba.njit(cache=True)
def add_one(x):
    return x + 1
"""

_FLOOR_PROBE = """
import json, time
import numpy
start = time.perf_counter()
import numba_floor
imported = time.perf_counter()
numba_floor.add_one(1)
end = time.perf_counter()
print(json.dumps({"total_s": end - start, "import_s": imported - start,
                  "warm_up_s": end - imported}))
"""


def _probe(code: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if proc.returncode == 0 and lines else
            {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]})


def kernel_compile_times(rounds: int = 1) -> dict:
    """Per round, cold (a fresh NUMBA_CACHE_DIR), then cached (the same dir), each in a new
    process, then numba's floor (:data:`_FLOOR_PROBE`, cached: its cold run only fills the
    cache); "cold", "cached" and "floor" hold the round of the median total, "rounds" every
    one."""
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as code:
            Path(code, "numba_floor.py").write_text(_FLOOR_MODULE)
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for name in ("cold", "cached"):
                out[name] = _probe(_KERNEL_PROBE, env)
                if "error" in out[name]:
                    return {"error": out[name]["error"]}
            out["cache_files"] = sum(len(files) for _, _, files in os.walk(cache))
            floor_env = {**env, "PYTHONPATH": os.pathsep.join(
                [code, *filter(None, [os.environ.get("PYTHONPATH")])])}
            for _ in range(2):  # the first fills the cache
                out["floor"] = _probe(_FLOOR_PROBE, floor_env)
            if "error" in out["floor"]:
                return {"error": out["floor"]["error"]}
        runs.append(out)
    median = {name: sorted((r[name] for r in runs), key=lambda t: t["total_s"])[rounds // 2]
              for name in ("cold", "cached", "floor")}
    ratios = [r["cached"]["total_s"] / r["floor"]["total_s"] for r in runs]
    return {**median, "cached_over_floor": statistics.median(ratios),
            "cache_files": runs[0]["cache_files"], "rounds": runs}


# --- report ---------------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    facts = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count(), "python": platform.python_version()}
    for module in ("numpy", "numba", "jax", "jaxlib", "torch"):
        try:
            facts[module] = __import__(module).__version__
        except ImportError:
            facts[module] = "not installed"
    if facts["torch"] != "not installed":
        import torch
        facts["torch_threads"] = torch.get_num_threads()
    facts["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return facts


def print_workload(console: Console, name: str, out: dict, setup: str) -> None:
    ref = out["reference"]
    table = Table(title=f"{name}: {setup}; medians of {out['rounds']} rounds",
                  caption="wall times on this machine: compare the ratios")
    for column in ("variant", "what", "seconds (median)", "rounds (s)",
                   f"this / {ref} (median of rounds)", "warm-up / compile (s)", "note"):
        left = column in ("variant", "what", "note")
        table.add_column(column, justify="left" if left else "right")
    for key, r in out["results"].items():
        table.add_row(key, r["label"], f"{r['median_s']:.3f}",
                      " ".join(f"{s:.2f}" for s in r["seconds"]),
                      f"{r['ratio_vs_reference']:.3g}",
                      "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}", r["note"])
    targets = Table(title=f"{name} targets")
    for column in ("target", "median", "rounds", "goal", "verdict"):
        targets.add_column(column)
    for t in out["targets"]:
        targets.add_row(t["target"], f"{t['value']:.3g}",
                        " ".join(f"{v:.3g}" for v in t["rounds"]),
                        f"{t['compare']} {t['threshold']:g}", t["verdict"])
    console.print(table, targets)
    ref_s = out["results"][ref]["seconds"]
    print(f"{name}: {out['gflop']:.4g} GFLOP; GEMM rate per round "
          + " ".join(f"{g:.1f}" for g in out["gemm_gflops"]) + f" GFLOP/s; {ref} per round "
          + " ".join(f"{out['gflop'] / t:.1f}" for t in ref_s) + " GFLOP/s")
    for key, costs in out["sanity"].items():
        text = ", ".join(f"{group} {value:.10f}" for group, value in costs.items())
        print(f"{name} sanity: mean final cost, {key}: {text}")
    if "numba_vs_numpy_max_abs" in out:
        text = ", ".join(f"{group} {value:.3g}"
                         for group, value in out["numba_vs_numpy_max_abs"].items())
        print(f"{name} sanity: max |final cost numba - numpy| over the replicas: {text}")


def print_kernels(console: Console, k: dict) -> None:
    if "error" in k:
        print(f"kernels not available ({k['error']})")
        return
    table = Table(title="initlab kernels: import initlab.nn.kernels; warm_up() (after numpy), "
                        f"the median of {len(k['rounds'])} rounds",
                  caption="cpu: the probe's CPU time over the total (no waits for a core); "
                          "the goals are on the total")
    for column in ("", "total (s)", "import (s)", "warm_up (s)", "cpu (s)", "goal", "verdict"):
        table.add_column(column)
    for name, goal in KERNEL_TARGETS.items():
        r = k[name]
        cpu = f"{r['cpu_s']:.2f}" if "cpu_s" in r else "-"
        table.add_row(name, f"{r['total_s']:.2f}", f"{r['import_s']:.2f}",
                      f"{r['warm_up_s']:.2f}", cpu, f"<= {goal:g}",
                      "PASS" if r["total_s"] <= goal else "MISS")
    if "floor" in k:
        r = k["floor"]
        table.add_row("numba's floor, cached", f"{r['total_s']:.2f}", f"{r['import_s']:.2f}",
                      f"{r['warm_up_s']:.2f}", "-", "-", "-")
    console.print(table)
    for name in ("cold", "cached", "floor"):
        if name in k:
            print(f"{name} totals per round (s): "
                  + " ".join(f"{r[name]['total_s']:.2f}" for r in k["rounds"]))
    if "cached_over_floor" in k:
        print("numba's floor: import numba and the first call, from its cache, of a function "
              "that adds 1 (warm_up column: the call)")
        print(f"cached total / numba's floor, median of the rounds: "
              f"{k['cached_over_floor']:.2f}")
    print(f"numba cache files written by the cold run: {k['cache_files']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W2,W4", help="comma list of W2, W4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=W2_EPOCHS, help="W2 epochs")
    parser.add_argument("--steps", type=int, default=None,
                        help="W4 steps, a multiple of 10 (default 320 x epochs / 15000)")
    parser.add_argument("--skip", default="", help="comma list of variants not to run")
    parser.add_argument("--json", metavar="PATH", help="save every time and ratio here")
    args = parser.parse_args(argv)
    workloads = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    if bad := [w for w in workloads if w not in ("W2", "W4")]:
        parser.error(f"unknown workload(s) {bad}; choose from W2, W4")
    if args.rounds < 1 or args.epochs < 1:
        parser.error(f"--rounds and --epochs must be >= 1; got {args.rounds}, {args.epochs}")
    batches = W4_CELL["samples"] // W4_CELL["batch"]
    if args.steps is None:
        args.steps = max(batches, round(W4_CELL["steps"] * args.epochs / W2_EPOCHS / batches)
                         * batches)
    if args.steps < batches or args.steps % batches:
        parser.error(f"--steps must be a positive multiple of {batches}; got {args.steps}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    console = Console()
    if not console.is_terminal:  # a pipe or a file: wide enough for the tables' notes
        console = Console(width=160)
    report: dict[str, Any] = {"argv": sys.argv[1:], "machine": machine()}
    console.print(report["machine"])
    report["kernels"] = kernel_compile_times(args.rounds)
    print_kernels(console, report["kernels"])
    setups = {"W2": f"moons, 30 replicas, {args.epochs} epochs",
              "W4": f"20 x (64 -> 50 x 128 tanh -> 10), batch 128, {args.steps} steps"}
    for name in workloads:
        report[name] = (w2 if name == "W2" else w4)(args, skip)
        report[name]["setup"] = setups[name]
        print_workload(console, name, report[name], setups[name])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
