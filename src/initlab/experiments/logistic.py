"""E6 `logistic`: a single sigmoid unit has no symmetry to break and a convex loss, so zero
and random initial weights train to the same optimum."""

from __future__ import annotations

import numpy as np
from scipy import optimize

from initlab import data
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Sequential, replica_labels, sweep
from initlab.report import figures as plots

NAME = "logistic"
TITLE = "E6 logistic: zero init is fine for a single neuron"
CLAIM = ("Logistic regression can start from all-zero weights: trained to convergence it reaches "
         "the same weights and accuracy as a random start.")
WHY = ("One unit has no other unit to stay symmetric with, and the cross-entropy of a linear "
       "model is convex in its weights; on data that no line separates it is strictly convex with "
       "a finite minimiser, so gradient descent from any start ends at that one point.")
INITS = {"zeros": "zeros", "normal": {"name": "normal", "std": 1.0}}
LEARNING_RATE = 4.0  # below 2 / L: the Hessian of the mean cross-entropy is <= 0.25 X^T X / n
EPOCHS = 1500  # the slowest seed passes 1e-8 near epoch 550 and rounding's floor by 1,100
GRAD_TOL = 1e-8
WEIGHT_TOL = 1e-5
LOG_EVERY = 50

CLAIMS = [
    ("E6.finite-optimum", "The data is not linearly separable (so the optimum is finite) and "
     "full-batch gradient descent reaches a gradient norm below 1e-8 from both starts, for every "
     "seed", "trained to convergence (no number printed)"),
    ("E6.same-weights", "Zero and random init reach the same weights and bias within 1e-5, for "
     "every seed", "zero init is fine for logistic regression (no number printed)"),
    ("E6.same-accuracy", "Zero and random init reach the same train and test accuracy, for every "
     "seed", "zero init is fine for logistic regression (no number printed)"),
]


def _separable(X: np.ndarray, y: np.ndarray) -> bool:
    """Whether a line separates the classes: is s_i (w·x_i + b) >= 1 feasible (s = ±1)?"""
    s = np.where(y == 1, 1.0, -1.0)
    A = -s[:, None] * np.column_stack([X, np.ones(len(X))])
    result = optimize.linprog(np.zeros(X.shape[1] + 1), A_ub=A, b_ub=-np.ones(len(X)),
                              bounds=[(None, None)] * (X.shape[1] + 1), method="highs")
    return result.status == 0  # 0: a feasible point was found; 2: infeasible


def _theta(model: Sequential) -> np.ndarray:
    """(w1, w2, b) of every replica, (R, 3)."""
    layer = model.layers[0]
    return np.concatenate([layer.params["W"][:, :, 0], layer.params["b"][:, 0, :]], axis=1)


def _gradient_norm(model: Sequential) -> np.ndarray:
    grads = model.grads[0]
    return np.sqrt(np.sum(grads["W"] ** 2, axis=(1, 2)) + np.sum(grads["b"] ** 2, axis=(1, 2)))


def _pair(labels, values) -> tuple[np.ndarray, np.ndarray]:
    """(zeros, normal) values, each in seed order."""
    by = {name: np.array([v for (n, _), v in zip(labels, values, strict=True) if n == name])
          for name in INITS}
    return by["zeros"], by["normal"]


def run(ctx: Context) -> CardResult:
    seeds = ctx.seeds
    labels = replica_labels(INITS, seeds)
    splits = {seed: data.moons(seed) for seed in seeds}
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = Sequential([Dense(1, "sigmoid")]).compile("binary_crossentropy")
    model.build(2, **sweep(INITS, seeds))
    ctx.progress(0.05)
    theta_log, grad_log = [_theta(model)], []

    def log_step(m: Sequential, epoch: int) -> None:
        if (epoch + 1) % LOG_EVERY == 0 or epoch == EPOCHS - 1:
            theta_log.append(_theta(m))  # after the step
        if epoch % LOG_EVERY == 0 or epoch == EPOCHS - 1:
            grad_log.append(_gradient_norm(m))  # of the step just taken, at its start

    model.fit(X, y, learning_rate=LEARNING_RATE, epochs=EPOCHS, log_every=LOG_EVERY,
              callbacks=[log_step])
    ctx.progress(0.9)
    model.compute_gradients(X, y)
    final_grad = _gradient_norm(model)
    theta = _theta(model)
    on_train = model.evaluate(X, y)
    train, final_cost = on_train["accuracy"], on_train["loss"]
    test = model.evaluate(X_test, y_test)["accuracy"]
    separable = [_separable(*splits[s][:2]) for s in seeds]

    zero_theta, random_theta = _pair(labels, theta)
    gap = np.max(np.abs(zero_theta - random_theta), axis=1)  # per seed
    start = np.linalg.norm(_pair(labels, theta_log[0])[1] - zero_theta, axis=1)
    grad_zero, grad_random = _pair(labels, final_grad)
    train_zero, train_random = _pair(labels, train)
    test_zero, test_random = _pair(labels, test)
    differ = int(np.sum((train_zero != train_random) | (test_zero != test_random)))
    theta_text = ", ".join(f"{k} {spread(zero_theta[:, i], '.6g')}"
                           for i, k in enumerate(("w1", "w2", "b")))
    claims = [
        Claim(*CLAIMS[0], f"linearly separable: {sum(separable)} of {len(seeds)} seeds; final "
                          f"gradient norm: zeros {spread(grad_zero, '.2e')}, normal "
                          f"{spread(grad_random, '.2e')}; "
                          f"|θ| {spread(np.linalg.norm(theta, axis=1), '.4g')}",
              check(not any(separable) and np.all(final_grad < GRAD_TOL)
                    and np.all(np.isfinite(theta)))),
        Claim(*CLAIMS[1], f"max |θ_zeros − θ_normal| per seed {spread(gap, '.2e')} (the normal "
                          f"start was {spread(start, '.3g')} away); from zeros: {theta_text}",
              check(np.all(gap < WEIGHT_TOL))),
        Claim(*CLAIMS[2], f"train: zeros {spread(train_zero, '.2%')}, normal "
                          f"{spread(train_random, '.2%')}; test: zeros {spread(test_zero, '.2%')}, "
                          f"normal {spread(test_random, '.2%')}; seeds that differ: {differ}",
              check(np.array_equal(train_zero, train_random)
                    and np.array_equal(test_zero, test_random))),
    ]
    # distance of every replica, along training, to where its seed's zero start ended
    optimum = {seed: t for (name, seed), t in zip(labels, theta, strict=True) if name == "zeros"}
    distance = np.linalg.norm(np.array(theta_log) - np.array([optimum[s] for _, s in labels]),
                              axis=2)
    figure = _figure(distance, np.array(grad_log), labels, ctx.figure("logistic-convergence"))
    ctx.progress(1.0)
    rows = [{"init": name, "seed": seed, "w1": float(t[0]), "w2": float(t[1]), "b": float(t[2]),
             "final_gradient_norm": float(g), "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for (name, seed), t, g, tr, te, c in zip(labels, theta, final_grad, train, test,
                                                     final_cost, strict=True)]
    notes = [f"One Dense(1, sigmoid) unit with a bias (started at 0 in both variants), binary "
             f"cross-entropy from the logit; {len(seeds)} seeds x 2 inits as one model; "
             f"full-batch gradient descent, learning rate {LEARNING_RATE}, {EPOCHS:,} epochs "
             f"(a fixed budget, then the gradient norm is checked).",
             "Linear programming rules out a separating line (no w, b with s_i (w·x_i + b) >= 1 "
             "for all points), so no direction drives the loss to 0; the run itself certifies "
             "the finite minimiser: a finite θ where the gradient of this convex loss vanishes, "
             "unique because the loss is strictly convex (the inputs with a 1 column have full "
             "rank)."]
    return CardResult(NAME, TITLE, claims, {"weights": rows},
                      [str(figure.relative_to(ctx.folder))], notes,
                      data="make_moons(400 train / 100 test, noise 0.2), drawn per seed")


def _figure(distance, grads, labels, path):
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    grad_epochs = sorted(set(range(0, EPOCHS, LOG_EVERY)) | {EPOCHS - 1})
    theta_epochs = [0] + sorted(set(range(LOG_EVERY, EPOCHS + 1, LOG_EVERY)) | {EPOCHS})
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    for name, color in zip(INITS, plots.TAB10, strict=False):
        index = [r for r, (n, _) in enumerate(labels) if n == name]
        for ax, x, values in ((axes[0], theta_epochs, distance[:, index]),
                              (axes[1], grad_epochs, grads[:, index])):
            values = np.where(values > 0, values, np.nan)  # 0: exactly at the end point
            ax.plot(x, np.median(values, axis=1), color=color, label=f"{name} init")
            ax.fill_between(x, values.min(axis=1), values.max(axis=1), color=color, alpha=0.2,
                            linewidth=0)
    axes[1].axhline(GRAD_TOL, color="k", linestyle=":", label="1e-8")
    axes[0].set_ylabel("|θ − θ* of the zero start|")
    axes[1].set_ylabel("gradient norm")
    return plots.finish_log_panels(fig, axes, path, xlabel="epoch",
                                   title="E6 logistic regression: median and min-max band "
                                         "over seeds")
