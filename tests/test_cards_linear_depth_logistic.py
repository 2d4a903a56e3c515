"""The cards E3 deep-linear, E4 depth and E6 logistic end to end at tiny size: the run folder, the
verdicts that are deterministic, and for each card a negative control, a deliberately wrong
variant whose claim must then fail (so a check that can never fail would be caught)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from scipy import stats

from initlab import data, initializers, schemes
from initlab.experiments import deep_linear, depth, logistic, runner
from initlab.experiments.card import Run, Variant
from initlab.nn import Dense, Sequential

VERDICTS = {"holds", "fails"}


def _run(card, tmp_path, control=False) -> dict[str, str]:
    """Run one card at tiny size on seeds 0 and 1; check its results.json; claim id -> verdict."""
    card = card.card  # the card of a card module
    name, ids = card.name, [c.id for c in card.claims]
    folder, _ = runner.run_cards([card], seeds=[0, 1], out=tmp_path, size="tiny",
                                 **({"control": True} if control else {}))
    payload = json.loads((folder / "results.json").read_text())
    (entry,) = [c for c in payload["cards"] if c["name"] == name]
    assert [c["id"] for c in entry["claims"]] == ids
    for claim in entry["claims"]:
        assert claim["verdict"] in VERDICTS, claim
        assert claim["measured"] and claim["source_printed"]
    assert entry["figures"]
    for figure in entry["figures"]:
        assert (folder / figure).is_file()
    assert name in payload["data"]
    assert list((folder / "tables").glob(f"{name}-*.csv"))
    return {c["id"]: c["verdict"] for c in entry["claims"]}


def test_deep_linear_identity_is_exact(tmp_path):
    verdicts = _run(deep_linear, tmp_path)
    assert verdicts["E3.identity-explodes"] == "holds"
    assert verdicts["E3.identity-vanishes"] == "holds"
    assert verdicts["E3.identity-gradient"] == "holds"


def test_deep_linear_wrong_gains_fail(tmp_path):
    # the control: 1.4 I where the claim says 1.5 I, and n Var(W) = 1.44 where it says g = 1
    identity_14 = [{"name": "identity", "gain": 1.4}] * 9 + [None]
    assert deep_linear.card.control.variants == {
        "1.5 I": Variant(identity_14), "g=1.0": Variant(deep_linear._scaled(1.2))}
    assert not deep_linear.card.control.config
    assert deep_linear.IDENTITY["1.5 I"] == 1.5 and deep_linear.GAINS["g=1.0"] == 1.0
    verdicts = _run(deep_linear, tmp_path, control=True)
    assert verdicts["E3.identity-explodes"] == "fails"
    assert verdicts["E3.identity-vanishes"] == "holds"
    assert verdicts["E3.identity-gradient"] == "fails"
    assert verdicts["E3.random-factor"] == "fails"
    assert verdicts["E3.random-phases"] == "fails"


def test_depth_overflow_underflow_and_data(tmp_path):
    verdicts = _run(depth, tmp_path)
    assert verdicts["E4.standardized"] == "holds"
    assert verdicts["E4.naive-overflow"] == "holds"
    assert verdicts["E4.tiny-underflow"] == "holds"


def test_depth_wrong_variants_fail(tmp_path):
    # the control: each variant swapped for one that must break its claim; "linear xavier"
    # gets std 2 / sqrt(n_in); the context variants stay on the context seeds
    doubled = {"name": "variance_scaling", "scale": 4.0, "mode": "fan_in",
               "distribution": "normal"}
    assert depth.card.control.variants == {
        "linear naive": Variant("lecun_normal"), "linear tiny": Variant("lecun_normal"),
        "linear xavier": Variant(doubled),
        "linear orthogonal": Variant("lecun_normal", context=True),
        # the ReLU Xavier no longer has the linear one's init: it must draw its own, not share
        "relu xavier": Variant("he_normal"), "relu kaiming": Variant("lecun_normal"),
        # "LSUV" that leaves its orthonormal start alone (no scheme); "ZerO" left at He, a
        # draw per seed, and no scheme
        "relu lsuv": Variant("orthogonal", context=True), "relu zero": Variant("he_normal")}
    assert not depth.card.control.config
    assert set(depth.card.control.variants) == set(depth.card.variants), "every variant"
    verdicts = _run(depth, tmp_path, control=True)
    assert verdicts["E4.standardized"] == "holds"
    for claim in ("naive-overflow", "tiny-underflow", "xavier-linear", "relu-xavier-halves",
                  "relu-kaiming-walk", "orthogonal-isometry", "lsuv-unit", "zero-identity"):
        assert verdicts[f"E4.{claim}"] == "fails", claim


def test_depth_measures_lsuv_rather_than_trusting_its_report(tmp_path, monkeypatch):
    # "LSUV" that leaves its orthonormal start alone yet reports success: the card recomputes
    # the pre-activation std, so the claim must fail
    def reports_success(model, X):
        return schemes.LSUVResult(np.ones((len(model.layers), model.replicas), bool),
                                  np.zeros(len(model.layers), int),
                                  np.ones((len(model.layers), model.replicas)))

    monkeypatch.setitem(depth.card.variants, "relu lsuv",
                        Variant("orthogonal", scheme=reports_success, context=True))
    verdicts = _run(depth, tmp_path)
    assert verdicts["E4.lsuv-unit"] == "fails"


def _batches(seeds: list[int], size: int) -> dict[int, np.ndarray]:
    """Each seed's float32 batch of the standardised tiny data, drawn as the card draws it."""
    split = data.image_data(None, limit=1000)
    X, _, _ = data.standardize(split.X_train, split.X_test)
    return {s: X[np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
                 .choice(len(X), size, replace=False)].astype(np.float32) for s in seeds}


def _stack(activation: str, init, seed: int, fan_in: int) -> Sequential:
    """A stand-alone tiny E4 stack (100 bias-free layers of 64, a 10-unit head) of one seed."""
    layers = [Dense(64, activation, use_bias=False) for _ in range(100)]
    return Sequential(layers + [Dense(10, use_bias=False)]).build(
        fan_in, rng=np.random.SeedSequence(seed), dtype=np.float32, variants=[init])


def _forward(model: Sequential, X: np.ndarray, activation: str) -> tuple[np.ndarray, ...]:
    """Per layer (the head left out), by hand in NumPy: the std of x W, and the std and the
    root-mean-square of the output."""
    pre, out, rms, a = [], [], [], X
    for layer in model.layers[:-1]:
        z = a @ layer.params["W"][0]
        a = np.maximum(z, 0) if activation == "relu" else z
        a64 = a.astype(np.float64)
        pre.append(z.astype(np.float64).std())
        out.append(a64.std())
        rms.append(np.sqrt(np.mean(a64**2)))
    return np.array(pre), np.array(out), np.array(rms)


def test_depth_context_variants_match_a_recomputation(tmp_path):
    # orthogonal, LSUV and ZerO, each rebuilt stand-alone for each seed and pushed through
    # the stack by hand: the card's table and verdicts must agree with that
    seeds = [0, 1]
    folder, (result,) = runner.run_cards([depth.card], seeds=seeds, out=tmp_path, size="tiny")
    verdicts = {c.id: c.verdict for c in result.claims}
    rows = {(r["variant"], r["layer"]): r for r in result.tables["layers"]}
    assert {v for v, _ in rows} >= {"linear orthogonal", "relu lsuv", "relu zero"}
    assert len(result.figures) == 4 and all((folder / f).is_file() for f in result.figures)
    batches = _batches(seeds, 16)
    fan_in = batches[0].shape[1]
    recomputed = {"linear orthogonal": [], "relu lsuv": [], "relu zero": []}
    lsuv_off, drift = [], []
    for s in seeds:
        X = batches[s]
        _, out, rms = _forward(_stack("linear", "orthogonal", s, fan_in), X, "linear")
        recomputed["linear orthogonal"].append(out)
        drift.append(np.max(np.abs(rms[1:] / rms[0] - 1)))
        # LSUV from the seed's orthogonal draw, as its own first step would draw it
        model = _stack("relu", "orthogonal", s, fan_in)
        assert schemes.lsuv(model, X, tol=0.1, orthogonal=False).ok
        pre, out, _ = _forward(model, X, "relu")
        lsuv_off.append(np.max(np.abs(pre - 1)))
        recomputed["relu lsuv"].append(out)
        model = schemes.zero_init(_stack("relu", "zeros", s, fan_in))
        recomputed["relu zero"].append(_forward(model, X, "relu")[1])
    for variant, values in recomputed.items():
        mean = np.mean(values, axis=0)
        table = np.array([rows[(variant, layer)]["act_std_mean"] for layer in range(1, 101)])
        # float32 sums in another order than the engine's: ~1e-7 apart after 100 layers
        np.testing.assert_allclose(table, mean, rtol=1e-5, err_msg=variant)
    assert max(drift) < depth.ISOMETRY_TOLERANCE  # so the claim must hold
    assert verdicts["E4.orthogonal-isometry"] == "holds"
    assert max(lsuv_off) < depth.LSUV_TOLERANCE
    assert verdicts["E4.lsuv-unit"] == "holds"
    zero = np.array(recomputed["relu zero"])
    assert np.all(zero == zero[:, :1])  # identity layers: every layer is layer 1, exactly
    assert verdicts["E4.zero-identity"] == "holds"


def test_depth_relu_xavier_shares_the_linear_draws_exactly(monkeypatch):
    # drawn once for both stacks: the ReLU Xavier stack (and LSUV's orthonormal start) must be
    # the one it would draw itself
    card = depth.card

    def measure() -> depth.Measured:
        return depth.measure(Run(card, card.config("tiny"), dict(card.variants)))

    shared = measure()
    assert shared.shared == {"relu xavier": "linear xavier", "relu lsuv": "linear orthogonal"}
    monkeypatch.setattr(depth, "SHARED", {})
    drawn = measure()
    assert drawn.shared == {}
    assert shared.relu.labels == drawn.relu.labels
    for name in ("relu xavier", "relu lsuv"):
        assert set(s for n, s in shared.relu.labels if n == name) == {0, 1}
        for key in ("std", "mean", "grad", "pre_std"):
            np.testing.assert_array_equal(shared.of(name, key), drawn.of(name, key))


def test_the_walk_drawn_directly_is_its_definition_with_variance_5_over_n():
    # R = (2/n) Σ relu(g_i)², g_i i.i.d. N(0, 1): E relu(g)² = 1/2 and E relu(g)⁴ = E g⁴ / 2 =
    # 3/2, so Var(R) = 4 (3/2 − 1/4) / n = 5/n, and to leading order Var(ln R) = 5/n and
    # E ln R = −Var/2 = −5/(2n); the rest is O(1/n²) (about 0.02/n at n = 1024)
    n, draws = 1024, 2_000_000
    log_r = depth.simulate_walk(n, 1, draws, rng=0)[:, 0]
    # sampling errors: 5·sqrt(2/draws) ≈ 0.005 and sqrt(5n/draws) ≈ 0.05; a constant of 4 or 6
    # is off by 1 and 0.5
    assert abs(n * log_r.var() - 5) < 0.1
    assert abs(n * log_r.mean() + 2.5) < 0.25
    # the χ²(Bin(n, 1/2)) shortcut is the definition: a KS test against g drawn and rectified
    g = np.random.default_rng(1).standard_normal((100_000, 32))
    direct = np.log(2 / 32 * np.sum(np.maximum(g, 0) ** 2, axis=1))
    assert stats.ks_2samp(depth.simulate_walk(32, 1, 100_000, rng=2)[:, 0], direct).pvalue > 1e-4
    # ... and the test can fail: width 40 is another distribution
    assert stats.ks_2samp(depth.simulate_walk(40, 1, 100_000, rng=2)[:, 0], direct).pvalue < 1e-4
    walk = depth.simulate_walk(32, 100, 1000, rng=3)  # partial sums over the layers
    assert walk.shape == (1000, 100) and np.all(np.isfinite(walk))


def test_depth_walk_is_measured_and_fails_with_widths_swapped_or_a_wrong_constant():
    card = depth.card
    m = depth.measure(Run(card, card.config("tiny"), dict(card.variants)))
    walk = m.walk
    assert walk.widths == (32, 64, 128) and [len(v) for v in walk.net] == [64, 32, 16]
    # network 5 of seed 1 at width 64, rebuilt by hand from its stream: the card's s_l
    x = _batches([1], 16)[1][5].astype(np.float64)  # network k gets image k of the batch
    rng = np.random.default_rng(np.random.SeedSequence(1, spawn_key=(1, 64, 5)))
    d, square0, norms = x.size, np.sum(x**2), []
    for _ in range(100):
        W = initializers.get("he_normal")((x.size, 64), rng=rng, dtype=np.float32)
        x = np.maximum(x @ W.astype(np.float64), 0)
        norms.append(np.sum(x**2))
    # seed 1's networks follow seed 0's 16; the first layer's n/d taken out
    np.testing.assert_allclose(walk.net[1][16 + 5], np.log(np.array(norms) / square0 / (64 / d)),
                               atol=1e-4)
    assert depth.relu_kaiming_walk(m).holds
    # the widths' measurements swapped: the variance no longer scales as 1/n
    swapped = depth.Walk(walk.widths, walk.net[::-1], walk.sim)
    assert not depth.relu_kaiming_walk(dataclasses.replace(m, walk=swapped)).holds
    # with 4000 draws a width the check resolves the constant: walks drawn directly hold, and
    # their spread scaled to 4/n or 6/n (the mean kept) fails
    draws = [depth.simulate_walk(n, 100, 4000, rng=n) for n in walk.widths]
    for factor, holds in ((1.0, True), (0.8, False), (1.2, False)):
        net = tuple(d.mean(0) + (d - d.mean(0)) * np.sqrt(factor) for d in draws)
        outcome = depth.relu_kaiming_walk(
            dataclasses.replace(m, walk=depth.Walk(walk.widths, net, walk.sim)))
        assert outcome.holds == holds, (factor, outcome.headline)


def test_logistic_zero_and_random_init_agree(tmp_path):
    verdicts = _run(logistic, tmp_path)
    assert set(verdicts.values()) == {"holds"}


def test_logistic_short_training_fails(tmp_path):
    # the control: 20 epochs are far from convergence, the gradient is large and the two
    # starts still differ
    assert logistic.card.control.config == {"epochs": 20}
    verdicts = _run(logistic, tmp_path, control=True)
    assert verdicts["E6.finite-optimum"] == "fails"
    assert verdicts["E6.same-weights"] == "fails"
