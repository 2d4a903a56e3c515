"""E1 `moons`: zero, large random and He initialization of a 2-12-6-1 ReLU network, trained with
the stable loss (from logits) and with the sources' clipped-probability loss."""

from __future__ import annotations

import math

import numpy as np

from initlab import data, schemes
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots

NAME = "moons"
TITLE = "E1 moons: zeros vs large random vs He"
CLAIM = ("Zero weights learn nothing (cost ln 2, 50 % accuracy), large random weights start with a "
         "huge cost and end worse, He initialization reaches about 95 %.")
WHY = ("With every weight 0 every hidden unit outputs 0, so the output is sigmoid(b) and every "
       "weight gradient is 0; on balanced classes the bias gradient mean(p - y) is 0 too, so "
       "nothing ever moves. Weights ×10 saturate the sigmoid: the sources' loss, computed from the "
       "clipped probability, passes no gradient through a saturated output and stalls, while the "
       "loss computed from the logits keeps the gradient p - y and recovers most of the way: "
       "compare the two 'large' claims. What survives of the source's conclusion is that large "
       "weights start far worse and end worse than He; how much worse depends on the loss.")
CORE = {"zeros": "zeros", "large": {"name": "scaled_normal", "scale": 10.0}, "he": "he_normal"}
CONTEXT = {"glorot_uniform": "glorot_uniform", "lecun_normal": "lecun_normal",
           "torch_default": "torch_default", "orthogonal": "orthogonal",
           "lsuv": "orthogonal", "zero": "zeros"}
# context variants that are model-level schemes, applied to their replicas after build (LSUV on
# each replica's own training set); the init above is only where they start from
SCHEMES = {"lsuv": lambda model, X: schemes.lsuv(model, X),
           "zero": lambda model, X: schemes.zero_init(model)}
CLIPPED = {"name": "clipped_binary_crossentropy", "eps": 1e-15}
CONTEXT_SEEDS = 3
CLAIMS = [
    ("E1.zeros-ln2", "Zero init: the cost is ln 2 at every epoch, for every seed",
     "0.6931271807599427 at every epoch"),
    ("E1.zeros-chance", "Zero init: accuracy is exactly the majority-class rate",
     "50 % train / 50 % test"),
    ("E1.large-start", "Large init (N(0,1) × 10) starts with a cost far above ln 2",
     "7.31 at epoch 0"),
    ("E1.he-accuracy", "He init reaches a mean test accuracy of at least 92 %",
     "95.4 % train / 94.0 % test"),
    ("E1.large-worse", "Large init ends clearly below He (stable loss from logits)",
     "86 % / 83 % vs He 95 % / 94 %"),
    ("E1.large-worse-clipped", "Large init ends clearly below He (the sources' clipped loss)",
     "86 % / 83 % vs He 95 % / 94 %"),
]


def _model(loss) -> Sequential:
    return Sequential([Dense(12, "relu"), Dense(6, "relu"), Dense(1, "sigmoid")]).compile(loss)


def _train(variants: dict, seeds_of: dict, loss, epochs: int, log_every: int):
    labels = [(name, seed) for name in variants for seed in seeds_of[name]]
    splits = {seed: data.moons(seed) for _, seed in labels}
    X = np.stack([splits[s][0] for _, s in labels])
    y = np.stack([splits[s][1] for _, s in labels])
    X_test = np.stack([splits[s][2] for _, s in labels])
    y_test = np.stack([splits[s][3] for _, s in labels])
    model = _model(loss).build(2, rng=[np.random.SeedSequence(s) for _, s in labels],
                               variants=[variants[name] for name, _ in labels])
    for name, scheme in SCHEMES.items():
        index = [r for r, (n, _) in enumerate(labels) if n == name]
        if index:
            sub = model.take(index)
            scheme(sub, X[index])
            model.put(index, sub)
    model.fit(X, y, learning_rate=0.01, epochs=epochs, log_every=log_every)
    return {"labels": labels, "model": model, "costs": np.array(model.history["cost"]),
            "epochs": model.history["epoch"],
            "train": model.evaluate(X, y)["accuracy"],
            "test": model.evaluate(X_test, y_test)["accuracy"], "X": X, "y": y}


def _pick(run: dict, name: str, values: np.ndarray) -> np.ndarray:
    return np.array([v for (n, _), v in zip(run["labels"], values, strict=True) if n == name])


def run(ctx: Context) -> CardResult:
    epochs, log_every = (300, 50) if ctx.tiny else (15_000, 1_000)
    seeds = ctx.seeds
    context_seeds = seeds[:CONTEXT_SEEDS]
    stable_variants = {**CORE, **CONTEXT}
    seeds_of = {name: seeds if name in CORE else context_seeds for name in stable_variants}
    stable = _train(stable_variants, seeds_of, "binary_crossentropy", epochs, log_every)
    ctx.progress(0.7)
    clipped_variants = {k: CORE[k] for k in ("large", "he")}
    clipped = _train(clipped_variants, seeds_of, CLIPPED, epochs, log_every)
    ctx.progress(0.95)

    zeros_costs = _pick(stable, "zeros", stable["costs"].T)
    he_test = _pick(stable, "he", stable["test"])
    large_start = _pick(stable, "large", stable["costs"][0])
    majority = [max(np.mean(y), 1 - np.mean(y)) for (n, _), y in
                zip(stable["labels"], stable["y"], strict=True) if n == "zeros"]
    zeros_train = _pick(stable, "zeros", stable["train"])
    gap = _pick(stable, "he", stable["test"]).mean() - _pick(stable, "large", stable["test"]).mean()
    gap_clipped = (_pick(clipped, "he", clipped["test"]).mean()
                   - _pick(clipped, "large", clipped["test"]).mean())
    worst_ln2 = float(np.max(np.abs(zeros_costs - math.log(2))))
    claims = [
        Claim(*CLAIMS[0], f"max |cost − ln 2| = {worst_ln2:.1e} over every epoch and seed",
              check(worst_ln2 < 1e-12)),
        Claim(*CLAIMS[1], f"train accuracy {spread(zeros_train, '.1%')}, majority rate "
                          f"{spread(majority, '.1%')}",
              check(np.allclose(zeros_train, majority, rtol=0, atol=1e-12))),
        Claim(*CLAIMS[2], f"initial cost {spread(large_start, '.3g')} (ln 2 = 0.693)",
              check(np.mean(large_start) > 3 * math.log(2))),
        Claim(*CLAIMS[3], f"He test accuracy {spread(he_test, '.1%')}",
              check(np.mean(he_test) >= 0.92)),
        Claim(*CLAIMS[4], f"test accuracy: large "
                          f"{spread(_pick(stable, 'large', stable['test']), '.1%')}, "
                          f"He {spread(he_test, '.1%')} (gap {gap:.1%})",
              check(gap > 0.05)),
        Claim(*CLAIMS[5], f"test accuracy: large "
                          f"{spread(_pick(clipped, 'large', clipped['test']), '.1%')}, He "
                          f"{spread(_pick(clipped, 'he', clipped['test']), '.1%')} "
                          f"(gap {gap_clipped:.1%})",
              check(gap_clipped > 0.05)),
    ]
    tables = {"costs": _cost_rows(stable, "binary_crossentropy") + _cost_rows(clipped, "clipped"),
              "accuracy": _accuracy_rows(stable, "binary_crossentropy")
              + _accuracy_rows(clipped, "clipped")}
    figures = [
        plots.cost_curves({f"{n} (from logits)": _pick(stable, n, stable["costs"].T)
                           for n in stable_variants} |
                          {f"{n} (clipped)": _pick(clipped, n, clipped["costs"].T)
                           for n in clipped_variants},
                          stable["epochs"], ctx.figure("moons-costs"),
                          title="E1 training cost (band: min-max over seeds)"),
        plots.decision_boundaries({n: (stable["model"], stable["labels"].index((n, seeds[0])))
                                   for n in CORE}, stable["X"], stable["y"], stable["labels"],
                                  ctx.figure("moons-boundaries")),
    ]
    notes = [f"{len(seeds)} seeds for zeros, large and He; {len(context_seeds)} for the context "
             f"variants; {epochs:,} full-batch epochs at learning rate 0.01.",
             "Context variants 'lsuv' (LSUV on each seed's training set, tol 0.1) and 'zero' "
             "(ZerO: identity / Hadamard, the same in every seed) are model-level schemes. "
             "Fixup does not apply: it needs residual blocks, and this 2-12-6-1 network has "
             "none (E7 covers residual networks).",
             "The clipped loss clips p to [1e-15, 1 − 1e-15] and back-propagates through the "
             "sigmoid, as the sources' framework does; the zeros variant is the same under both "
             "losses (its output never leaves 0.5)."]
    return CardResult(NAME, TITLE, claims, tables,
                      [str(f.relative_to(ctx.folder)) for f in figures], notes,
                      data="make_moons(400 train / 100 test, noise 0.2), drawn per seed")


def _cost_rows(run: dict, loss: str) -> list[dict]:
    rows = []
    names = list(dict.fromkeys(n for n, _ in run["labels"]))
    for e, epoch in enumerate(run["epochs"]):
        for name in names:
            values = _pick(run, name, run["costs"][e])
            rows.append({"loss": loss, "variant": name, "epoch": epoch,
                         "mean": float(values.mean()), "std": float(values.std()),
                         "min": float(values.min()), "max": float(values.max())})
    return rows


def _accuracy_rows(run: dict, loss: str) -> list[dict]:
    return [{"loss": loss, "variant": name, "seed": seed, "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for (name, seed), tr, te, c in zip(run["labels"], run["train"], run["test"],
                                               run["costs"][-1], strict=True)]
