"""`lsuv`: layer-sequential unit-variance init against He and Glorot on a 20-layer network."""

from __future__ import annotations

import numpy as np

from initlab import data
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots
from initlab.schemes import lsuv

NAME = "lsuv"
TITLE = "lsuv: LSUV vs He vs Glorot on a 20-layer ReLU network"
CLAIM = ("LSUV (orthogonal weights, then each layer scaled until its output has unit variance "
         "on a batch) gives every layer std 1 at init, and trains at least as well as He and "
         "Glorot (Mishkin & Matas 2016).")
WHY = ("He and Glorot fix the variance from the fans alone, which is exact only in the "
       "infinite-width, independent-input limit; LSUV measures it on real data and corrects "
       "each layer in turn, so the scale is right for this network and this data whatever the "
       "activation. With ReLU, Glorot's variance halves at every layer, and 20 layers leave "
       "its signal about 2^-10 of its start.")
DEPTH, WIDTH, TOL = 20, 32, 0.1
VARIANTS = {"lsuv": "lecun_normal", "he": "he_normal", "glorot": "glorot_normal"}
CLAIMS = [
    ("lsuv.unit-std", "After LSUV every layer's pre-activation std on the probe batch is "
     "within 0.1 of 1, for every seed", "LSUV: unit variance in every layer by construction"),
    ("lsuv.trains", "LSUV's test accuracy after a fixed budget is within 2 points of the best "
     "of He and Glorot, or above", "LSUV matches or beats the standard inits (the paper)"),
]


def _model() -> Sequential:
    return Sequential([Dense(WIDTH, "relu") for _ in range(DEPTH)]
                      + [Dense(10, "softmax")]).compile("softmax_crossentropy", "adam")


def _pre_activation_std(model: Sequential, X: np.ndarray) -> np.ndarray:
    """(layers, R): the std of each layer's x W + b on X."""
    stds = []
    with model.register_hook("forward", lambda i, layer, trace: stds.append(
            np.std(trace.z.reshape(model.replicas, -1), axis=1))):
        model.predict(X)
    return np.array(stds)


def run(ctx: Context) -> CardResult:
    tiny = ctx.tiny
    n_train, epochs = (300, 5) if tiny else (1000, 12)
    seeds = ctx.seeds[:3]
    split = data.image_data(ctx.data, limit=max(n_train, 1000))
    X, X_test, _ = data.standardize(split.X_train[:n_train], split.X_test[:1000])
    y, y_test = split.y_train[:n_train], split.y_test[:1000]
    probe = X[:256]
    results = {}
    for k, (name, init) in enumerate(VARIANTS.items()):
        model = _model().build(X.shape[1], rng=[np.random.SeedSequence(s) for s in seeds],
                               variants=[init] * len(seeds))
        lsuv_result = lsuv(model, probe, tol=TOL) if name == "lsuv" else None
        std = _pre_activation_std(model, probe)
        model.fit(X, y, learning_rate=1e-3, epochs=epochs, batch_size=100, log_every=1)
        results[name] = {"std": std, "lsuv": lsuv_result,
                         "test": model.evaluate(X_test, y_test)["accuracy"],
                         "costs": np.array(model.history["cost"]),
                         "epochs": model.history["epoch"]}
        ctx.progress((k + 1) / len(VARIANTS))
    lsuv_std = results["lsuv"]["std"][:-1]  # the hidden layers (the softmax head is not scaled)
    worst = float(np.max(np.abs(lsuv_std - 1.0)))
    best_other = max(np.mean(results[n]["test"]) for n in ("he", "glorot"))
    claims = [
        Claim(*CLAIMS[0], f"largest |std − 1| over {DEPTH} hidden layers and seeds: {worst:.3g}; "
                          f"iterations per layer ≤ {int(results['lsuv']['lsuv'].iterations.max())}",
              check(worst < TOL)),
        Claim(*CLAIMS[1], "test accuracy: " + ", ".join(
            f"{n} {spread(results[n]['test'], '.1%')}" for n in VARIANTS),
              check(np.mean(results["lsuv"]["test"]) >= best_other - 0.02)),
    ]
    figures = [
        plots.std_vs_depth({n: {"mean": r["std"][:-1].mean(axis=1),
                                "min": r["std"][:-1].min(axis=1),
                                "max": r["std"][:-1].max(axis=1)} for n, r in results.items()},
                           ctx.figure("lsuv-std"), ylabel="pre-activation std at init",
                           title=f"lsuv: each hidden layer's pre-activation std at init "
                                 f"({split.name} batch)"),
        plots.cost_curves({n: r["costs"].T for n, r in results.items()}, results["he"]["epochs"],
                          ctx.figure("lsuv-costs"), title="lsuv: training cost (Adam, 1e-3)"),
    ]
    tables = {"std": [{"variant": n, "layer": i, "seed": s, "std": float(r["std"][i, j])}
                      for n, r in results.items() for i in range(len(r["std"]))
                      for j, s in enumerate(seeds)]}
    notes = [f"{len(seeds)} seeds; {DEPTH} ReLU layers of width {WIDTH} and a softmax head; "
             f"LSUV on a probe batch of 256 training images, tol {TOL}; then Adam (1e-3), "
             f"{epochs} epochs of minibatches of 100 on {n_train} images, tested on 1,000."]
    return CardResult(NAME, TITLE, claims, tables,
                      [str(f.relative_to(ctx.folder)) for f in figures], notes,
                      data=f"{split.name} ({split.source}), standardised with the training "
                           f"mean and std")
