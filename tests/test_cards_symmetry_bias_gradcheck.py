"""Cards E2 (symmetry), E5 (bias-only) and E8 (gradcheck) end to end at tiny size, each with a
negative control: a deliberately wrong variant or a broken backward must FAIL its claim."""

import json

import numpy as np
import pytest

from initlab import data
from initlab.experiments import bias_only, gradcheck, runner, symmetry
from initlab.experiments.card import Run, Variant
from initlab.nn import Dense, Sequential, activations


def _run(card, tmp_path, control=False) -> tuple[dict, dict]:
    card = card.card  # the card of a card module
    name, ids = card.name, [c.id for c in card.claims]
    folder, _ = runner.run_cards([card], seeds=[0, 1], out=tmp_path, size="tiny",
                                 **({"control": True} if control else {}))
    (entry,) = json.loads((folder / "results.json").read_text())["cards"]
    assert entry["name"] == name
    assert [c["id"] for c in entry["claims"]] == ids
    assert all(c["verdict"] in {"holds", "fails"} and c["measured"] for c in entry["claims"])
    assert entry["figures"] and all((folder / f).is_file() for f in entry["figures"])
    return entry, {c["id"]: c["verdict"] for c in entry["claims"]}


def test_symmetry_card_keeps_constant_units_identical(tmp_path):
    entry, verdicts = _run(symmetry, tmp_path)
    assert verdicts["E2.constant-one-unit"] == "holds"
    assert verdicts["E2.he-distinct"] == "holds"
    assert verdicts["E2.no-better"] == "holds"
    assert "max |Δp|" in entry["claims"][2]["measured"]


def test_symmetry_claim_fails_when_the_constant_is_perturbed(tmp_path):
    # the control, 0.5 + N(0, 1e-3): the units start 1e-3 apart, far beyond the 1e-9 tolerance
    assert symmetry.card.control.variants["constant 0.5"].init == {"name": "normal",
                                                                   "mean": 0.5, "std": 1e-3}
    _, verdicts = _run(symmetry, tmp_path, control=True)
    assert verdicts["E2.constant-one-unit"] == "fails"
    assert verdicts["E2.no-better"] == "fails"  # no longer its collapsed 1-unit form
    assert verdicts["E2.he-distinct"] == "holds"


def test_constant_network_trains_as_one_unit_network_with_width_scaled_rates():
    """The notes' claim: a constant-c 2-12-6-1 network is a 2-1-1-1 network with weights
    c, 12 c, 6 c trained with learning rate x fan-in/width per weight (1/12, 2, 6) and
    x 1/width per bias (1/12, 1/6, 1)."""
    X, y, X_test, _ = data.moons(0, n_train=100, n_test=50)
    lr, c = 0.05, 0.5
    wide = Sequential([Dense(12, "relu"), Dense(6, "relu"), Dense(1, "sigmoid")])
    wide.compile("binary_crossentropy").build(2, rng=0, variants=[{"name": "constant",
                                                                    "value": c}])
    one = Sequential([Dense(1, "relu"), Dense(1, "relu"), Dense(1, "sigmoid")])
    one.compile("binary_crossentropy").build(
        2, rng=0, variants=[[{"name": "constant", "value": c * n} for n in (1, 12, 6)]])
    scales = [1 / 12, 1 / 12, 12 / 6, 1 / 6, 6, 1]  # W1, b1, W2, b2, W3, b3
    for _ in range(200):
        wide.compute_gradients(X, y)
        for p, g in zip(wide.parameters(), wide.gradients(), strict=True):
            p -= lr * g
        one.compute_gradients(X, y)
        for p, g, s in zip(one.parameters(), one.gradients(), scales, strict=True):
            p -= lr * s * g
    np.testing.assert_allclose(wide.predict(X_test), one.predict(X_test), rtol=0, atol=1e-12)
    # and the collapse used by the card gives the same network from the wide one's weights
    collapsed = symmetry.collapse(wide, [0])
    np.testing.assert_allclose(collapsed.predict(X_test), wide.predict(X_test), atol=1e-12)
    np.testing.assert_allclose(collapsed.layers[1].params["W"], one.layers[1].params["W"],
                               rtol=1e-9)


def test_expected_awake_pattern_is_the_last_t_layers():
    pattern = bias_only.expected_awake(6)
    assert pattern.shape == (6, bias_only.LAYERS)
    assert pattern.sum(axis=1).tolist() == [1, 2, 3, 4, 5, 5]
    assert pattern[0].tolist() == [False, False, False, False, True]


def test_bias_only_card_wakes_one_layer_per_iteration(tmp_path):
    entry, verdicts = _run(bias_only, tmp_path)
    assert verdicts["E5.awake"] == "holds"
    assert verdicts["E5.ones-awake"] == "holds"
    assert verdicts["E5.slower"] == "holds"
    # and then it stalls at both tiny balances, 50/50 and 90/10, while He learns
    assert verdicts["E5.stalls-at-every-balance"] == "holds"
    stall = next(c for c in entry["claims"] if c["id"] == "E5.stalls-at-every-balance")
    assert "learned in 0/4 balance x seed runs by 400 epochs; He in 4/4 by 200" in \
        stall["headline"]
    assert any(f.endswith("bias-only-balance.png") for f in entry["figures"])


def test_bias_only_awake_claim_fails_with_random_weights(tmp_path):
    # the control, small random weights everywhere: every layer has a gradient at iteration 1
    assert bias_only.card.control.variants["zeros"].init == {"name": "normal", "std": 1e-3}
    _, verdicts = _run(bias_only, tmp_path, control=True)
    assert verdicts["E5.awake"] == "fails"
    assert verdicts["E5.ones-awake"] == "holds"
    # not flipped by it: N(0, 1e-3) weights are as input-blind at the start and stall too
    assert verdicts["E5.stalls-at-every-balance"] == "holds"


def test_bias_only_stall_claim_fails_when_the_weights_can_learn():
    # He weights in the zero-weight arm: they learn at every balance, so no stall is measured
    cfg = bias_only.card.config("tiny", seeds=2)
    variants = {**bias_only.card.variants, "zeros": Variant("he_normal")}
    m = bias_only.measure(Run(bias_only.card, cfg, variants))
    assert m.sweep.learned("zeros").all()
    assert not bias_only.stalls(m).holds


def test_bias_only_stall_claim_fails_on_a_budget_too_short_to_learn(tmp_path):
    # 2 epochs: He cannot have learned either, so the sweep cannot tell a stall from the budget
    folder, _ = runner.run_cards([bias_only.card], seeds=2, out=tmp_path, size="tiny",
                                 options={"budgets": (2,)})
    (entry,) = json.loads((folder / "results.json").read_text())["cards"]
    verdicts = {c["id"]: c["verdict"] for c in entry["claims"]}
    assert verdicts["E5.stalls-at-every-balance"] == "fails"
    assert verdicts["E5.awake"] == "holds"  # the other claims do not read the sweep


@pytest.mark.parametrize("share", [0.5, 0.6, 0.75, 0.9])
def test_imbalanced_moons_keep_the_share_in_train_and_test(share):
    X, y, X_test, y_test = bias_only.imbalanced_moons(3, share)
    assert X.shape == (400, 2) and X_test.shape == (100, 2)
    assert np.mean(y == 0) == share and np.mean(y_test == 0) == share
    full = data.moons(3, n_train=800, n_test=200)  # the points are those of the seed's draw
    assert {tuple(p) for p in X} <= {tuple(p) for p in full[0]}


@pytest.mark.parametrize("share", [0.4, 1.0])
def test_imbalanced_moons_refuse_a_share_outside_half_to_one(share):
    with pytest.raises(ValueError, match=f"majority must be in \\[0.5, 1\\); got majority={share}"):
        bias_only.imbalanced_moons(0, share)


def test_bias_only_refuses_budgets_that_do_not_increase():
    cfg = bias_only.card.config("tiny", seeds=1, overrides={"budgets": (300, 200)})
    with pytest.raises(ValueError, match=r"budgets must be increasing epoch counts >= 1; got "
                                         r"budgets=\(300, 200\)"):
        bias_only.measure_sweep(Run(bias_only.card, cfg, dict(bias_only.card.variants)))


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_input_blind_net_is_stationary_at_every_balance(share):
    """The why of the stall: first-layer weights 0 (the net ignores its input) and p = mean(y)
    make every gradient 0 but the first layer's weights', at any balance; the first layer's is
    rank one, along the class-mean difference."""
    X, y, _, _ = bias_only.imbalanced_moons(0, share)
    model = bias_only.network().build(2, rng=0, variants=[["zeros"] + ["he_normal"] * 4])
    p = float(model.predict(X)[0, 0])
    rate = float(y.mean())
    model.layers[-1].params["b"] += np.log(rate / (1 - rate)) - np.log(p / (1 - p))
    np.testing.assert_allclose(model.predict(X), rate, rtol=0, atol=1e-12)
    model.compute_gradients(X, y)
    first, *rest = model.gradients()
    assert all(np.max(np.abs(g)) < 1e-12 for g in rest)
    assert np.max(np.abs(first)) > 1e-6
    mean_gap = X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)
    flat = first[0]  # (fan_in 2, units 8): mean((p - y) x) times one vector over the units
    np.testing.assert_allclose(np.linalg.svd(flat, compute_uv=False)[1], 0, atol=1e-12)
    u = np.linalg.svd(flat)[0][:, 0]
    np.testing.assert_allclose(abs(u @ mean_gap) / np.linalg.norm(mean_gap), 1, rtol=1e-9)


def test_gradcheck_card_passes(tmp_path):
    entry, verdicts = _run(gradcheck, tmp_path)
    assert verdicts["E8.all-match"] == "holds"
    assert "8 combinations x 2 seeds" in entry["claims"][0]["measured"]


def test_gradcheck_card_fails_on_a_broken_backward(tmp_path, monkeypatch):
    def wrong(self, z, a, da):  # 1 - a instead of 1 - a^2
        da *= 1.0 - a
        return da

    monkeypatch.setattr(activations.Tanh, "backward", wrong)
    _, verdicts = _run(gradcheck, tmp_path)
    assert verdicts["E8.all-match"] == "fails"


def test_gradcheck_card_fails_on_a_coarse_difference_step(tmp_path):
    # the control, a step of 0.1: the O(h^2) truncation error breaks the 1e-6 tolerance
    assert gradcheck.card.control.config == {"eps": 1e-1}
    assert gradcheck.card.sizes["tiny"].eps == 1e-6  # the card's own step is the fine one
    entry, verdicts = _run(gradcheck, tmp_path, control=True)
    assert verdicts["E8.all-match"] == "fails"
    assert "8 combinations x 2 seeds" in entry["claims"][0]["measured"]


def test_gradcheck_card_runs_at_most_three_seeds(tmp_path):
    # the seed only draws the data and weights: more seeds are refused, not silently cut
    assert gradcheck.card.sizes["default"].seeds == gradcheck.card.max_seeds == 3
    with pytest.raises(ValueError, match="at most 3 seeds; got seeds=4"):
        runner.run_cards([gradcheck.card], seeds=4, out=tmp_path)
