"""Benchmark: 30 replicas of the moons network, trained by initlab and by the usual alternatives.

What it measures: the wall time to train 30 independent copies of the moons network
(2 -> 12 ReLU -> 6 ReLU -> 1 sigmoid, binary cross-entropy from the logits, full-batch gradient
descent, learning rate 0.01, float64) on 400 points of ``make_moons(noise=0.2)`` for 15,000
epochs. The 30 replicas are 3 inits x 10 seeds: "zeros" (all weights 0), "large" (N(0,1) x 10)
and "he" (N(0,1) x sqrt(2/fan_in)), biases 0. Every replica trains on the SAME data (seed 0).

Variants (``--only`` keys):
  batched   initlab: one model holding the 30 replicas, one ``fit`` (default workers)
  batched1  the same with ``fit(workers=1)``: one process
  onebyone  initlab: 30 separate single models, trained one after another
  torch     a plain PyTorch loop: 30 nn.Sequential models, SGD, one after another
  jax       JAX: params with a leading axis of 30, vmap(value_and_grad), the epoch loop in one jit

Each variant first runs a 1-epoch warm-up, untimed (for JAX this is the compile, so compile time
is excluded), then the timed runs: init + training + the final cost, in rounds that time every
variant once each; a ratio is taken within each round and the median of the rounds reported.
As a sanity check it prints the mean final training cost of the 10 "he" replicas: initlab
batched and one by one should agree exactly; torch and JAX draw different weights, so they
should only be close.

Run:  python bench/moons_replicas.py --epochs 15000 [--repeats 3] [--only batched,torch]
                                      [--json results.json]

The numbers are wall times on this machine: the ratios matter, not the absolute values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
from sklearn.datasets import make_moons

from initlab.nn import Dense, Sequential, replica_labels, sweep

INITS = {"zeros": "zeros", "large": {"name": "scaled_normal", "scale": 10.0}, "he": "he_normal"}
SEEDS = range(10)
LABELS = replica_labels(INITS, SEEDS)  # (init, seed) per replica, init-major
SIZES = [(2, 12), (12, 6), (6, 1)]  # (fan_in, units) per layer
LR = 0.01


def initlab_net() -> Sequential:
    return Sequential([Dense(12, "relu"), Dense(6, "relu"), Dense(1, "sigmoid")])


def scale_of(init: str, fan_in: int) -> float:
    """The std of a weight under each init, for the torch and JAX versions."""
    return {"zeros": 0.0, "large": 10.0, "he": float(np.sqrt(2.0 / fan_in))}[init]


# --- the variants: make_*(X, y) does the untimed set-up and returns run(epochs) -> 30 costs -----

def make_batched(X, y, workers=None):
    def run(epochs):
        model = initlab_net().compile("binary_crossentropy")
        model.build(2, **sweep(INITS, seeds=SEEDS))  # 30 replicas, each from SeedSequence(seed)
        model.fit(X, y, learning_rate=LR, epochs=epochs, log_every=1000, workers=workers)
        return np.asarray(model.evaluate(X, y)["loss"])
    return run


def make_batched1(X, y):
    return make_batched(X, y, workers=1)


def make_onebyone(X, y):
    def run(epochs):
        costs = []
        for init, seed in LABELS:
            spec = INITS[init]
            model = Sequential([Dense(12, "relu", init=spec), Dense(6, "relu", init=spec),
                                Dense(1, "sigmoid", init=spec)]).compile("binary_crossentropy")
            model.build(2, rng=np.random.SeedSequence(seed), variants=None)
            model.fit(X, y, learning_rate=LR, epochs=epochs, log_every=1000)
            costs.append(float(model.evaluate(X, y)["loss"]))
        return np.array(costs)
    return run


def make_torch(X, y):
    import torch
    from torch import nn
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64).reshape(-1, 1)

    def run(epochs):
        costs = []
        for init, seed in LABELS:
            gen = torch.Generator().manual_seed(seed)
            net = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 6), nn.ReLU(),
                                nn.Linear(6, 1)).double()
            with torch.no_grad():
                for layer in (net[0], net[2], net[4]):
                    fan_in = layer.in_features
                    w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64)
                    layer.weight.copy_(w * scale_of(init, fan_in))
                    layer.bias.zero_()
            loss_fn = nn.BCEWithLogitsLoss()
            opt = torch.optim.SGD(net.parameters(), lr=LR)
            for _ in range(epochs):
                opt.zero_grad()
                loss = loss_fn(net(Xt), yt)
                loss.backward()
                opt.step()
            with torch.no_grad():
                costs.append(float(loss_fn(net(Xt), yt)))
        return np.array(costs)
    return run


def make_jax(X, y):
    import jax  # ImportError: the variant is skipped
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    Xj, yj = jnp.asarray(X, dtype=jnp.float64), jnp.asarray(y, dtype=jnp.float64).reshape(-1, 1)

    def init_one(init, seed):
        key, params = jax.random.PRNGKey(seed), []
        for fan_in, units in SIZES:
            key, sub = jax.random.split(key)
            w = jax.random.normal(sub, (fan_in, units), dtype=jnp.float64)
            params.append((w * scale_of(init, fan_in), jnp.zeros((units,), jnp.float64)))
        return params

    def loss(params, X, y):  # one replica
        a = X
        for i, (W, b) in enumerate(params):
            z = a @ W + b
            a = jax.nn.relu(z) if i < len(params) - 1 else z
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    value_and_grad = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))

    @jax.jit
    def train(params, X, y, epochs):  # epochs is traced: 1 epoch and 15,000 share one compile
        def step(_, p):
            _, grads = value_and_grad(p, X, y)
            return jax.tree_util.tree_map(lambda w, g: w - LR * g, p, grads)
        params = jax.lax.fori_loop(0, epochs, step, params)
        return jax.vmap(loss, in_axes=(0, None, None))(params, X, y)

    def run(epochs):
        reps = [init_one(init, seed) for init, seed in LABELS]
        params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *reps)  # leading axis of 30
        return np.asarray(train(params, Xj, yj, epochs).block_until_ready())
    return run


VARIANTS = {  # key: (label, maker)
    "batched": ("initlab batched (default workers)", make_batched),
    "batched1": ("initlab batched, workers=1", make_batched1),
    "onebyone": ("initlab one by one", make_onebyone),
    "torch": ("plain PyTorch loop", make_torch),
    "jax": ("JAX jit+vmap", make_jax),
}


def machine_facts() -> dict:
    facts = {"os.cpu_count()": os.cpu_count(), "numpy": np.__version__}
    try:
        import torch
        facts["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads, default)"
    except ImportError:
        facts["torch"] = "not installed"
    try:
        import jax
        facts["jax"] = jax.__version__
    except ImportError:
        facts["jax"] = "not installed"
    try:
        from threadpoolctl import threadpool_info
        def where(path):  # the package that ships the library, e.g. numpy.libs
            parts = path.split(os.sep)
            return parts[parts.index("site-packages") + 1] if "site-packages" in parts else path
        facts["BLAS / OpenMP"] = "; ".join(
            f"{p['prefix']} {p.get('version') or ''} ({where(p['filepath'])}, "
            f"{p['num_threads']} threads)".replace("  ", " ") for p in threadpool_info())
    except ImportError:
        facts["BLAS / OpenMP"] = "threadpoolctl not installed"
    return facts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15000)
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds; each times every variant once (medians are reported)")
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help=f"comma list of variants to run, of: {','.join(VARIANTS)}")
    parser.add_argument("--json", metavar="PATH", help="also save the numbers here")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := [k for k in keys if k not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    X, y = make_moons(n_samples=400, noise=0.2, random_state=0)
    he = [i for i, (init, _) in enumerate(LABELS) if init == "he"]
    runs = {}
    for key in keys:
        label, maker = VARIANTS[key]
        try:
            runs[key] = maker(X, y)
        except ImportError as exc:
            print(f"{label}: skipped ({exc.name} not installed)")
            continue
        runs[key](1)  # warm-up, untimed (JAX: the compile)
    # round-robin: each round times every variant once, so that a slow spell of this shared
    # machine (seen: +-30 % within minutes) hits the variants of a round alike; the ratios are
    # taken within each round, then their median
    times: dict[str, list[float]] = {key: [] for key in runs}
    costs: dict[str, np.ndarray] = {}
    for round_ in range(args.repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            costs[key] = run(args.epochs)
            times[key].append(time.perf_counter() - start)
            print(f"round {round_ + 1}: {VARIANTS[key][0]}: {times[key][-1]:.3f} s", flush=True)
    results = {}
    for key in runs:
        ratios = ([t / b for t, b in zip(times[key], times["batched"], strict=True)]
                  if "batched" in runs else [])
        results[key] = {"label": VARIANTS[key][0], "seconds": statistics.median(times[key]),
                        "all_seconds": times[key], "ratios": ratios,
                        "ratio": statistics.median(ratios) if ratios else None,
                        "he_mean_final_cost": float(np.mean(costs[key][he])),
                        "final_costs": costs[key].tolist()}

    base = results.get("batched", {}).get("seconds")
    facts = machine_facts()
    setup = (f"30 replicas (3 inits x 10 seeds), {args.epochs} epochs, median of {args.repeats}; "
             f"every replica trains on the same data: make_moons(400, noise=0.2, random_state=0)")
    rows = [(r["label"], f"{r['seconds']:.3f}",
             f"{r['ratio']:.2f}x" if base else "-", f"{r['he_mean_final_cost']:.6f}")
            for r in results.values()]
    header = ("variant", "median wall time (s)", "/ initlab batched (median of the rounds)",
              "mean final cost, he replicas")
    try:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=setup, caption="wall times on this machine: compare the ratios")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        facts_table = Table(title="machine", show_header=False)
        for name, value in facts.items():
            facts_table.add_row(name, str(value))
        Console().print(facts_table, table)
    except ImportError:
        print(setup)
        for row in (header, *rows):
            print(" | ".join(row))
        for name, value in facts.items():
            print(f"{name}: {value}")
    if base:
        for key, r in results.items():
            if key != "batched":
                rounds = ", ".join(f"{v:.2f}" for v in r["ratios"])
                print(f"{r['label']} / initlab batched = {r['ratio']:.2f}x (rounds: {rounds})")
    if "batched" in results and "onebyone" in results:
        diff = np.max(np.abs(np.subtract(results["batched"]["final_costs"],
                                         results["onebyone"]["final_costs"])))
        print(f"max |final cost, batched - one by one| over the 30 replicas = {diff:.3g}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"epochs": args.epochs, "repeats": args.repeats, "setup": setup,
                       "machine": facts, "results": results}, fh, indent=2)
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
