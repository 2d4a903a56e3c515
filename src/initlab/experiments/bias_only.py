"""E5 `bias-only`: every weight 0 and random biases. The gradient reaches one layer deeper per
iteration; the network then sits at the constant prediction of the training class rate, at
every class balance the card sweeps, within every budget it sweeps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from initlab import data
from initlab.experiments import bias_only_report
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
from initlab.probes import Probe, awake_layers

WIDTH = 8
LAYERS = 5  # Dense layers, the sigmoid output layer included: 4 tanh hidden layers + output
PROBED = 8  # iterations recorded one by one at the start (the pattern completes at LAYERS)
BIASES = {"name": "normal", "std": 1.0}
LONG = ("zeros", "he")  # the variants trained past the probed iterations
# A run has learned when its held-out cost is this far below the input-blind cost H(q): the
# margin the card used below ln 2 = H(1/2). A stuck net scores H(q) to 1e-12; He, 0.1 to 0.6
# nats below it, so any margin between those gives the same verdicts.
LEARNED = 0.01


@dataclass(frozen=True)
class Settings(Config):
    epochs: int = 500
    log_every: int = 25
    learning_rate: float = 0.1
    # the balance sweep: the majority class's share (class 0), the same in train and test, and
    # the epochs at which its runs are judged (checkpoints of one run per balance and seed).
    # Far longer runs, outside the card (8 seeds, to 1,000,000 epochs): 0/8 learned at 50/50
    # and at 75/25, 1/8 at 90/10, at epoch 725,000.
    balances: tuple[float, ...] = (0.5, 0.6, 0.75, 0.9)
    budgets: tuple[int, ...] = (500, 2_000, 5_000)


card: Card[Measured] = Card(
    "bias-only",
    title="E5 bias-only: zero weights, random biases",
    claim="With every weight 0 and random biases the gradient reaches one more layer per "
          "iteration, counted from the output; after that the network settles at the constant "
          "prediction of the class rate and does not learn, at any class balance swept, within "
          "the budgets swept, while He weights with the same biases do. Weights all 1 pass "
          "gradient to every layer at once.",
    why="A layer's weight gradient is its input times the gradient at its pre-activation, and "
        "that gradient comes down through the next layer's weights: while those are 0 it is "
        "exactly 0. The first update makes the output layer's weights non-zero, the second the "
        "layer below it, and so on, so iteration t reaches the last t layers. Until the first "
        "layer's weights move, the network ignores its input and settles at p = mean(y), where "
        "every gradient but the first layer's is a multiple of mean(p - y) = 0: a stationary "
        "point at every class balance, not only at 1/2.",
    data="make_moons(400 train / 100 test, noise 0.2), drawn per seed; the balance sweep draws "
         "make_moons(800 / 200) and keeps a share q of class 0 in both splits (400 / 100)",
    sizes=sizes(Settings(), tiny={"seeds": 2, "epochs": 100, "log_every": 20,
                                  "balances": (0.5, 0.9), "budgets": (200, 400)},
                full={"seeds": 30, "epochs": 2_000, "log_every": 100,
                      "balances": (0.5, 0.6, 0.75, 0.9, 0.95),
                      "budgets": (500, 2_000, 10_000)}),
    # the weights of every layer; the biases are N(0, 1) in all of them (BIASES)
    variants={"zeros": Variant("zeros"), "he": Variant("he_normal"), "ones": Variant("ones")},
    control=Control(("E5.awake",), {"zeros": Variant({"name": "normal", "std": 1e-3})},
                    why="small random weights N(0, 1e-3) instead of zeros: every layer has a "
                        "weight gradient from iteration 1, so the one-layer-per-iteration "
                        "pattern is gone"),
)


@dataclass
class Measured:
    cfg: Settings
    seeds: list[int]
    labels: list[tuple[str, int]]  # every variant x seed, for the probed iterations
    awake: np.ndarray  # (R, PROBED, LAYERS): layer has a non-zero weight gradient
    output_bias: np.ndarray  # (R,) the output biases drawn
    long_labels: list[tuple[str, int]]  # the LONG variants x seeds, trained on
    final_awake: np.ndarray  # (R long, LAYERS), at the last epoch
    max_abs_W: np.ndarray  # (R long, LAYERS): largest |weight| of each layer after training
    costs: np.ndarray  # (logs, R long)
    epochs: list[int]
    test: np.ndarray  # (R long,)
    histograms: dict[str, np.ndarray]  # per LONG variant, its first seed: the last tanh layer
    hist_every: int
    sweep: Sweep

    def of(self, name: str, values) -> np.ndarray:
        """The entries of a variant, of every-variant values (labels order)."""
        return pick(self.labels, name, values)

    def long(self, name: str, values) -> np.ndarray:
        """The entries of a LONG variant, of values over the trained-on replicas."""
        return pick(self.long_labels, name, values)


@dataclass
class Sweep:
    """The balance sweep: per balance and seed, zero weights judged at every budget and He (the
    same N(0, 1) biases, the same data) at the first, the reference that the budget and the
    data allow learning. Arrays are (balances, seeds), or (budgets, balances, seeds) with one
    budget only for He."""

    balances: list[float]
    budgets: list[int]
    majority: np.ndarray  # test accuracy of predicting the training majority class everywhere
    blind: np.ndarray  # held-out cost of predicting the training class rate everywhere: H(q)
    cost: dict[str, np.ndarray]  # per variant, the held-out cost at each budget judged
    accuracy: dict[str, np.ndarray]  # per variant, the test accuracy at each budget judged
    learned_at: dict[str, np.ndarray]  # first logged epoch with training cost LEARNED below
    #                                    the training split's H(q); -1 if none in the run
    first_W: np.ndarray  # zero weights: the first layer's largest |weight| at each budget

    def learned(self, name: str) -> np.ndarray:
        return self.cost[name] <= self.blind - LEARNED

    def gain(self, name: str) -> np.ndarray:
        """Test accuracy minus the majority rate."""
        return self.accuracy[name] - self.majority


def imbalanced_moons(seed: int, majority: float, n_train: int = 400, n_test: int = 100
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Moons with a share ``majority`` of class 0 in train and test alike: ``data.moons`` of
    the seed at twice the size (half of each class), each split keeping the first
    round(n * majority) points of class 0 and the first of class 1 for the rest."""
    if not 0.5 <= majority < 1:
        raise ValueError(f"majority must be in [0.5, 1); got majority={majority!r}")
    X, y, X_test, y_test = data.moons(seed, n_train=2 * n_train, n_test=2 * n_test)

    def thin(X: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        k = round(n * majority)
        keep = np.sort(np.concatenate([np.flatnonzero(y == 0)[:k],
                                       np.flatnonzero(y == 1)[:n - k]]))
        return X[keep], y[keep]
    return (*thin(X, y, n_train), *thin(X_test, y_test, n_test))


def _entropy(rate: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of predicting ``rate`` (per replica) for every label of ``y`` (R, n)."""
    rate = rate[:, None]
    return -np.mean(y * np.log(rate) + (1 - y) * np.log(1 - rate), axis=1)


def _check_sweep(cfg: Settings) -> None:
    if not cfg.balances or not all(0.5 <= q < 1 for q in cfg.balances):
        raise ValueError(f"balances must be majority shares in [0.5, 1); got "
                         f"balances={cfg.balances!r}")
    budgets = list(cfg.budgets)
    if not budgets or budgets[0] < 1 or budgets != sorted(set(budgets)):
        raise ValueError(f"budgets must be increasing epoch counts >= 1; got "
                         f"budgets={cfg.budgets!r}")


def measure_sweep(run: Run) -> Sweep:
    """Zero weights and He, every balance x seed as replicas of one model (no probes: the
    compiled engine); He stops at the first budget, zero weights go on to the last."""
    cfg: Settings = run.cfg
    _check_sweep(cfg)
    grid = [(q, s) for q in cfg.balances for s in run.seeds]
    shape = (len(cfg.balances), len(run.seeds))
    splits = [imbalanced_moons(s, q) for q, s in grid]
    X, y, X_test, y_test = (np.stack([split[k] for split in splits]) for k in range(4))
    names = ("zeros", "he")
    model = network().build(
        2, rng=[np.random.SeedSequence(s) for _ in names for _, s in grid],
        variants=[run.variants[name].init for name in names for _ in grid],
        coords=[{"variant": name, "balance": q, "seed": s} for name in names for q, s in grid])
    rate = y.mean(axis=1)  # the training class-1 rate, what an input-blind net predicts
    blind_train = _entropy(rate, y)
    majority = np.mean(y_test == (rate >= 0.5)[:, None], axis=1)
    cost: dict[str, list[np.ndarray]] = {name: [] for name in names}
    accuracy: dict[str, list[np.ndarray]] = {name: [] for name in names}
    first_W: list[np.ndarray] = []
    learned_at: dict[str, np.ndarray] = {}
    split = [np.concatenate([a] * len(names)) for a in (X, y, X_test, y_test)]
    done = 0
    for k, budget in enumerate(cfg.budgets):
        model.fit(split[0], split[1], learning_rate=cfg.learning_rate, epochs=budget - done,
                  log_every=cfg.log_every)
        done = budget
        scores = model.evaluate(split[2], split[3])
        for name in names if k == 0 else ("zeros",):
            index = model.select(variant=name)
            cost[name].append(np.asarray(scores["loss"])[index].reshape(shape))
            accuracy[name].append(np.asarray(scores["accuracy"])[index].reshape(shape))
        zeros = model.select(variant="zeros")
        first_W.append(np.abs(model.layers[0].params["W"][zeros]).max(axis=(1, 2))
                       .reshape(shape))
        if k == 0:  # He has shown the budget suffices; zero weights go on alone
            learned_at["he"] = _first_learned(model, "he", blind_train).reshape(shape)
            model, split = model.take(zeros), [X, y, X_test, y_test]
        run.progress(0.6 + 0.4 * (k + 1) / len(cfg.budgets))
    learned_at["zeros"] = _first_learned(model, "zeros", blind_train).reshape(shape)
    return Sweep(list(cfg.balances), list(cfg.budgets), majority.reshape(shape),
                 _entropy(rate, y_test).reshape(shape),
                 {name: np.stack(v) for name, v in cost.items()},
                 {name: np.stack(v) for name, v in accuracy.items()}, learned_at,
                 np.stack(first_W))


def _first_learned(model: Sequential, name: str, blind: np.ndarray) -> np.ndarray:
    """Per replica of variant ``name``, the first logged epoch whose training cost is LEARNED
    below ``blind`` (one per replica of the variant); -1 where none is."""
    below = np.array(model.history["cost"])[:, model.select(variant=name)] <= blind - LEARNED
    epochs = np.asarray(model.history["epoch"])
    return np.where(below.any(axis=0), epochs[np.argmax(below, axis=0)], -1)


def network() -> Sequential:
    """The card's network, compiled, not built: 4 tanh layers of width WIDTH and a sigmoid
    output, every bias BIASES."""
    hidden = [Dense(WIDTH, "tanh", bias_init=BIASES) for _ in range(LAYERS - 1)]
    return Sequential([*hidden, Dense(1, "sigmoid", bias_init=BIASES)]).compile(
        "binary_crossentropy")


def expected_awake(iterations: int) -> np.ndarray:
    """awake[t - 1, layer] for t = 1..iterations: layer l (0-based) first receives a weight
    gradient at iteration LAYERS - l, once every layer above it has non-zero weights."""
    t = np.arange(1, iterations + 1)[:, None]
    return np.arange(LAYERS)[None, :] >= LAYERS - t


@card.measure
def measure(run: Run) -> Measured:
    """Every variant x seed as replicas of one model for the probed iterations, each one's
    weight gradients recorded; then zeros and He alone go on to ``epochs``."""
    cfg: Settings = run.cfg
    labels = run.labels()
    splits = {s: data.moons(s) for s in run.seeds}
    X, y, X_test, y_test = (np.stack([splits[s][k] for _, s in labels]) for k in range(4))
    model = network().build(2, **run.sweep())
    output_bias = model.layers[-1].params["b"][:, 0, 0].copy()
    run.progress(0.05)
    with Probe(model, every=1, symmetry=False, histograms=False) as probe:
        model.fit(X, y, learning_rate=cfg.learning_rate, epochs=PROBED, log_every=1)
    awake = np.stack([awake_layers(probe.table, r)[1] for r in range(len(labels))])
    # zeros and He go on; the 'ones' claim is about the first step only
    keep = [r for name in LONG for r in model.select(variant=name)]
    long = model.take(keep)
    # the distribution of the last hidden layer's outputs over training: the "colorful
    # dimension" view (histogram counts only, every few epochs)
    with Probe(long, every=max(1, cfg.epochs // 50), symmetry=False) as over_time:
        long.fit(X[keep], y[keep], learning_rate=cfg.learning_rate, epochs=cfg.epochs - PROBED,
                 log_every=cfg.log_every)
    run.progress(0.6)
    last = Probe(long, symmetry=False, histograms=False).record(X[keep], y[keep])
    return Measured(
        cfg=cfg, seeds=run.seeds, labels=labels, awake=awake, output_bias=output_bias,
        long_labels=[labels[r] for r in keep],
        final_awake=np.stack([awake_layers(last, r)[1][0] for r in range(len(keep))]),
        max_abs_W=np.array([[np.max(np.abs(layer.params["W"][r])) for layer in long.layers]
                            for r in range(len(keep))]),
        costs=np.array(long.history["cost"]), epochs=long.history["epoch"],
        test=long.evaluate(X_test[keep], y_test[keep])["accuracy"],
        histograms={name: over_time.histogram(LAYERS - 2, replica=long.select(variant=name)[0])
                    for name in LONG},
        hist_every=over_time.every, sweep=measure_sweep(run))


@card.claim("E5.awake",
            "Zero weights, N(0, 1) biases: at iteration t only the last t layers have non-zero "
            "weight gradients; all layers are awake from iteration 5 on (5 layers, the output "
            "counted)",
            printed="no number printed; the first update changes only the last layer, the second "
                    "the last two, and so on (seed 004)", uses=("zeros",))
def awake(m: Measured) -> Outcome:
    zeros = m.of("zeros", m.awake)
    matches = np.all(zeros == expected_awake(PROBED), axis=(1, 2))  # per seed
    all_awake_at_end = np.all(m.long("zeros", m.final_awake), axis=1)
    counts = zeros.sum(axis=2)  # (seeds, iterations): layers awake at each iteration
    return Outcome(bool(np.all(matches) and np.all(all_awake_at_end)),
                   f"seeds waking one layer per iteration: {int(matches.sum())}/{len(zeros)}",
                   f"layers awake at iterations 1..{PROBED}: "
                   + ", ".join(spread(counts[:, i], ".3g") for i in range(PROBED))
                   + f"; seeds matching the pattern exactly: {int(matches.sum())}/{len(zeros)}; "
                     f"all {LAYERS} layers awake at epoch {m.cfg.epochs:,} in "
                     f"{int(all_awake_at_end.sum())}/{len(all_awake_at_end)} seeds")


@card.claim("E5.ones-awake",
            "Weights all 1 with random biases: every layer has a non-zero weight gradient from "
            "the first iteration",
            printed="no number printed; with w = 1 instead of 0 the gradient is not stuck "
                    "(seed 004)", uses=("ones",))
def ones_awake(m: Measured) -> Outcome:
    first = m.of("ones", m.awake)[:, 0]  # (seeds, LAYERS) at iteration 1
    return Outcome(bool(np.all(first)),
                   f"fewest layers awake at iteration 1: {int(first.sum(axis=1).min())} of "
                   f"{LAYERS}",
                   f"layers awake at iteration 1: {spread(first.sum(axis=1), '.3g')} of {LAYERS}")


@card.claim("E5.stalls-at-every-balance",
            "Zero weights, N(0, 1) biases: at no class balance swept (majority share 50 % to "
            "90 % by default) does the network learn within the budgets swept (up to 5,000 "
            "epochs by default): in "
            "every seed its held-out cost stays within 0.01 nats of H(q), the cost of predicting "
            "the class rate for every point; He weights with the same biases and data learn at "
            "every balance by the first budget",
            printed="no number printed; randomising only b 'sort of works', it takes longer; a "
                    "comment: it 'eventually (and slowly)' fixes itself; and a balanced data set "
                    "has 'a good chance of starting learning close to a local minimum' (seed 004)",
            uses=("zeros", "he"))
def stalls(m: Measured) -> Outcome:
    w = m.sweep
    zeros, he = w.learned("zeros"), w.learned("he")[0]  # (budgets, balances, seeds), (bal, s)
    last, first = w.budgets[-1], w.budgets[0]
    per_balance = "; ".join(
        f"{q:.0%}: H(q) − cost {spread(w.blind[b] - w.cost['zeros'][-1, b], '.1e')}, accuracy − "
        f"majority {spread(w.gain('zeros')[-1, b], '.2f')}, largest first-layer weight "
        f"{spread(w.first_W[-1, b], '.1e')}"
        for b, q in enumerate(w.balances))
    he_at = w.learned_at["he"]
    return Outcome(
        bool(not zeros.any() and he.all()),
        f"zero weights learned in {int(zeros[-1].sum())}/{zeros[-1].size} balance x seed runs "
        f"by {last:,} epochs; He in {int(he.sum())}/{he.size} by {first:,}",
        f"zero weights after {last:,} epochs, per majority share: {per_balance}. Runs learned "
        f"(held-out cost ≥ {LEARNED} nats below H(q)) by epoch "
        + ", ".join(f"{e:,}: {int(zeros[k].sum())}/{zeros[k].size}"
                    for k, e in enumerate(w.budgets))
        + f". He, the same biases and data, after {first:,} epochs: H(q) − cost "
          f"{spread(w.blind - w.cost['he'][0], '.2f')}, accuracy − majority "
          f"{spread(w.gain('he')[0], '.2f')}, training cost {LEARNED} below H(q) from epoch "
          f"{spread(he_at[he_at >= 0], '.0f') if (he_at >= 0).any() else 'none'} "
          f"({int((he_at < 0).sum())} runs never)")


@card.claim("E5.slower", "Its cost stays above He's after the same number of epochs (it "
            "trains more slowly, or not at all)",
            printed="no number printed; zero weights take much longer to learn (seed 004)",
            uses=("zeros", "he"))
def slower(m: Measured) -> Outcome:
    zeros, he = m.long("zeros", m.costs[-1]), m.long("he", m.costs[-1])
    return Outcome(bool(np.mean(zeros) > np.mean(he)),
                   f"mean cost after {m.cfg.epochs:,} epochs: zeros {np.mean(zeros):.4g}, He "
                   f"{np.mean(he):.4g}",
                   f"cost after {m.cfg.epochs:,} epochs: zeros {spread(zeros, '.4g')}, He "
                   f"{spread(he, '.4g')}; test accuracy: zeros "
                   f"{spread(m.long('zeros', m.test), '.1%')}, He "
                   f"{spread(m.long('he', m.test), '.1%')}")


# the report's tables, figures and notes (bias_only_report), in the order it shows them
card.table("awake")(bias_only_report.awake_table)
card.table("weights")(bias_only_report.weights)
card.table("costs")(bias_only_report.costs)
card.table("balance")(bias_only_report.balance_table)
card.figure("bias-only-awake")(bias_only_report.awake_figure)
card.figure("bias-only-costs")(bias_only_report.cost_figure)
card.figure("bias-only-balance")(bias_only_report.balance_figure)
card.figure("bias-only-hist-zeros")(bias_only_report.zeros_histogram)
card.figure("bias-only-hist-he")(bias_only_report.he_histogram)
card.notes(bias_only_report.notes)
