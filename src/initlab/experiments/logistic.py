"""E6 `logistic`: a single sigmoid unit has no symmetry to break and a convex loss, so zero
and random initial weights train to the same optimum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize

from initlab import data
from initlab.experiments.card import (
    Card,
    Config,
    Control,
    Outcome,
    Run,
    Variant,
    pick,
    sizes,
    spread,
)
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots

GRAD_TOL = 1e-8
WEIGHT_TOL = 1e-5


@dataclass(frozen=True)
class Settings(Config):
    learning_rate: float = 4.0  # below 2 / L: the Hessian of the mean BCE is <= 0.25 X^T X / n
    epochs: int = 1500  # the slowest seed passes 1e-8 near epoch 550 and rounding's floor by 1,100
    log_every: int = 50


card: Card[Measured] = Card(
    "logistic",
    title="E6 logistic: zero init is fine for a single neuron",
    claim="Logistic regression can start from all-zero weights: trained to convergence it "
          "reaches the same weights and accuracy as a random start.",
    why="One unit has no other unit to stay symmetric with, and the cross-entropy of a linear "
        "model is convex in its weights; on data that no line separates it is strictly convex "
        "with a finite minimiser, so gradient descent from any start ends at that one point.",
    data="make_moons(400 train / 100 test, noise 0.2), drawn per seed",
    sizes=sizes(Settings(), tiny={"seeds": 2}),  # tiny keeps the budget convergence needs
    variants={"zeros": Variant("zeros"), "normal": Variant({"name": "normal", "std": 1.0})},
    control=Control(("E6.finite-optimum", "E6.same-weights"), config={"epochs": 20},
                    why="20 epochs are far from convergence: the gradient is large and the two "
                        "starts still differ"),
)


@dataclass
class Measured:
    cfg: Settings
    labels: list[tuple[str, int]]
    separable: list[bool]  # per seed
    theta: np.ndarray  # (R, 3): w1, w2, b after training
    theta_log: np.ndarray  # (logs, R, 3), from the start
    grad_log: np.ndarray  # (logs, R): the gradient norm at the start of logged steps
    final_grad: np.ndarray  # (R,)
    train: np.ndarray
    test: np.ndarray
    final_cost: np.ndarray

    def pair(self, values) -> tuple[np.ndarray, np.ndarray]:
        """(zeros, normal) values, each in seed order."""
        return pick(self.labels, "zeros", values), pick(self.labels, "normal", values)


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


@card.measure
def measure(run: Run) -> Measured:
    cfg: Settings = run.cfg
    labels = run.labels()
    splits = {seed: data.moons(seed) for seed in run.seeds}
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = Sequential([Dense(1, "sigmoid")]).compile("binary_crossentropy")
    model.build(2, **run.sweep())
    run.progress(0.05)
    theta_log, grad_log = [_theta(model)], []

    def log_step(m: Sequential, epoch: int) -> None:
        if (epoch + 1) % cfg.log_every == 0 or epoch == cfg.epochs - 1:
            theta_log.append(_theta(m))  # after the step
        if epoch % cfg.log_every == 0 or epoch == cfg.epochs - 1:
            grad_log.append(_gradient_norm(m))  # of the step just taken, at its start

    model.fit(X, y, learning_rate=cfg.learning_rate, epochs=cfg.epochs,
              log_every=cfg.log_every, callbacks=[log_step])
    run.progress(0.9)
    model.compute_gradients(X, y)
    on_train = model.evaluate(X, y)
    return Measured(cfg, labels, [_separable(*splits[s][:2]) for s in run.seeds],
                    _theta(model), np.array(theta_log), np.array(grad_log),
                    _gradient_norm(model), on_train["accuracy"],
                    model.evaluate(X_test, y_test)["accuracy"], on_train["loss"])


@card.claim("E6.finite-optimum", "The data is not linearly separable (so the optimum is finite) "
            "and full-batch gradient descent reaches a gradient norm below 1e-8 from both "
            "starts, for every seed", printed="trained to convergence (no number printed)")
def finite_optimum(m: Measured) -> Outcome:
    grad_zero, grad_random = m.pair(m.final_grad)
    return Outcome(not any(m.separable) and bool(np.all(m.final_grad < GRAD_TOL))
                   and bool(np.all(np.isfinite(m.theta))),
                   f"largest final gradient norm {np.max(m.final_grad):.1e}",
                   f"linearly separable: {sum(m.separable)} of {len(m.separable)} seeds; final "
                   f"gradient norm: zeros {spread(grad_zero, '.2e')}, normal "
                   f"{spread(grad_random, '.2e')}; "
                   f"|θ| {spread(np.linalg.norm(m.theta, axis=1), '.4g')}")


@card.claim("E6.same-weights", "Zero and random init reach the same weights and bias within "
            "1e-5, for every seed",
            printed="zero init is fine for logistic regression (no number printed)")
def same_weights(m: Measured) -> Outcome:
    zero_theta, random_theta = m.pair(m.theta)
    gap = np.max(np.abs(zero_theta - random_theta), axis=1)  # per seed
    start = np.linalg.norm(m.pair(m.theta_log[0])[1] - zero_theta, axis=1)
    theta_text = ", ".join(f"{k} {spread(zero_theta[:, i], '.6g')}"
                           for i, k in enumerate(("w1", "w2", "b")))
    return Outcome(bool(np.all(gap < WEIGHT_TOL)),
                   f"largest |θ_zeros − θ_normal| {np.max(gap):.1e}",
                   f"max |θ_zeros − θ_normal| per seed {spread(gap, '.2e')} (the normal start "
                   f"was {spread(start, '.3g')} away); from zeros: {theta_text}")


@card.claim("E6.same-accuracy", "Zero and random init reach the same train and test accuracy, "
            "for every seed",
            printed="zero init is fine for logistic regression (no number printed)")
def same_accuracy(m: Measured) -> Outcome:
    (train_zero, train_random), (test_zero, test_random) = m.pair(m.train), m.pair(m.test)
    differ = int(np.sum((train_zero != train_random) | (test_zero != test_random)))
    return Outcome(bool(np.array_equal(train_zero, train_random)
                        and np.array_equal(test_zero, test_random)),
                   f"seeds whose accuracy differs: {differ} of {len(train_zero)}",
                   f"train: zeros {spread(train_zero, '.2%')}, normal "
                   f"{spread(train_random, '.2%')}; test: zeros {spread(test_zero, '.2%')}, "
                   f"normal {spread(test_random, '.2%')}; seeds that differ: {differ}")


@card.table("weights")
def weights(m: Measured) -> list[dict]:
    return [{"variant": name, "seed": seed, "w1": float(t[0]), "w2": float(t[1]), "b": float(t[2]),
             "final_gradient_norm": float(g), "train_accuracy": float(tr),
             "test_accuracy": float(te), "final_cost": float(c)}
            for (name, seed), t, g, tr, te, c in zip(m.labels, m.theta, m.final_grad, m.train,
                                                     m.test, m.final_cost, strict=True)]


@card.figure("logistic-convergence")
def convergence(m: Measured, path: Path) -> Path:
    """Distance of every replica, along training, to where its seed's zero start ended, and
    the gradient norm."""
    cfg = m.cfg
    optimum = {seed: t for (name, seed), t in zip(m.labels, m.theta, strict=True)
               if name == "zeros"}
    distance = np.linalg.norm(m.theta_log - np.array([optimum[s] for _, s in m.labels]), axis=2)
    grad_epochs = sorted(set(range(0, cfg.epochs, cfg.log_every)) | {cfg.epochs - 1})
    theta_epochs = [0] + sorted(set(range(cfg.log_every, cfg.epochs + 1, cfg.log_every))
                                | {cfg.epochs})
    fig, axes = plots.plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    for name, color in zip(card.variants, plots.TAB10, strict=False):
        index = [r for r, (n, _) in enumerate(m.labels) if n == name]
        for ax, x, values in ((axes[0], theta_epochs, distance[:, index]),
                              (axes[1], grad_epochs, m.grad_log[:, index])):
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


@card.notes
def notes(m: Measured) -> list[str]:
    return [f"One Dense(1, sigmoid) unit with a bias (started at 0 in both variants), binary "
            f"cross-entropy from the logit; {len(m.separable)} seeds x 2 inits as one model; "
            f"full-batch gradient descent, learning rate {m.cfg.learning_rate}, "
            f"{m.cfg.epochs:,} epochs (a fixed budget, then the gradient norm is checked).",
            "Linear programming rules out a separating line (no w, b with s_i (w·x_i + b) >= 1 "
            "for all points), so no direction drives the loss to 0; the run itself certifies "
            "the finite minimiser: a finite θ where the gradient of this convex loss vanishes, "
            "unique because the loss is strictly convex (the inputs with a 1 column have full "
            "rank)."]
