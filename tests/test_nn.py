"""The engine: gradients by finite differences, replicas against stand-alone models, errors."""

import math

import numpy as np
import pytest
from sklearn.datasets import make_moons

from initlab.nn import Dense, GradcheckError, Sequential, activations, gradcheck, losses, sweep

HIDDEN = [a for a in activations.available() if a != "softmax"]
# (loss, output activation, output units)
LOSS_OUTPUTS = [
    ("binary_crossentropy", "sigmoid", 1),
    ("binary_crossentropy", "linear", 1),
    ({"name": "clipped_binary_crossentropy", "eps": 1e-7}, "sigmoid", 1),
    ("softmax_crossentropy", "softmax", 3),
    ("softmax_crossentropy", "linear", 3),
    ("mean_squared_error", "linear", 2),
    ("mean_squared_error", "tanh", 2),
    ("mean_squared_error", "softmax", 3),
]


def _targets(loss, units, n, rng):
    name = loss if isinstance(loss, str) else loss["name"]
    if "binary" in name:
        return rng.integers(0, 2, n)
    if name == "softmax_crossentropy":
        return rng.integers(0, units, n)
    return rng.standard_normal((n, units))


def _net(hidden, out_act, units, init="glorot_normal", replicas=2):
    return Sequential([
        Dense(5, hidden, init=init, bias_init={"name": "normal", "std": 0.1}),
        Dense(4, hidden, init=init, bias_init={"name": "normal", "std": 0.1}),
        Dense(units, out_act, init=init),
    ])


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,out_act,units", LOSS_OUTPUTS)
def test_gradcheck_every_activation_and_loss(hidden, loss, out_act, units):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((11, 3))
    y = _targets(loss, units, 11, rng)
    model = _net(hidden, out_act, units).compile(loss=loss).build(3, rng=1, replicas=2)
    result = gradcheck(model, X, y)
    assert result.ok
    assert max(result.per_layer().values()) < 1e-6
    assert set(result.per_layer()) == {0, 1, 2}


@pytest.mark.parametrize("act", ["leaky_relu", "elu"])
def test_gradcheck_parametrised_activations(act):
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((9, 3)), rng.integers(0, 2, 9)
    param = {"leaky_relu": "slope", "elu": "alpha"}[act]
    spec = {"name": act, param: 0.3}
    model = Sequential([Dense(6, spec, init="he_normal"), Dense(1, "sigmoid")])
    model.compile("binary_crossentropy").build(3, rng=0)
    assert gradcheck(model, X, y).ok


def test_gradcheck_fails_loudly_on_a_broken_backward(monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)), rng.integers(0, 2, 10)
    model = _net("tanh", "sigmoid", 1).compile("binary_crossentropy").build(3, rng=0)
    assert gradcheck(model, X, y).ok

    def wrong(self, z, a, da):  # forgets the square: 1 - a instead of 1 - a^2
        da *= 1.0 - a
        return da

    monkeypatch.setattr(activations.Tanh, "backward", wrong)
    with pytest.raises(GradcheckError, match=r"\(0, 'W'\)"):
        gradcheck(model, X, y)
    result = gradcheck(model, X, y, raise_on_failure=False)
    assert not result.ok and result.per_layer()[0] > 1e-3
    assert result.per_layer()[2] < 1e-6  # the output layer does not pass through tanh


def test_activation_derivatives_match_finite_differences_pointwise():
    z = np.linspace(-3, 3, 61)
    z = z[np.abs(z) > 1e-3]  # away from kinks
    for name in HIDDEN:
        act = activations.get(name)
        a = act.forward(z)
        numeric = (act.forward(z + 1e-6) - act.forward(z - 1e-6)) / 2e-6
        analytic = act.backward(z, a, np.ones_like(z))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_stable_bce_equals_naive_form_and_keeps_gradient_when_saturated():
    loss = losses.get("binary_crossentropy")
    z = np.array([[[-3.0], [0.5], [2.0]]])
    y = np.array([[[0.0], [1.0], [1.0]]])
    p = 1 / (1 + np.exp(-z))
    naive = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert loss.value(z, y)[0] == pytest.approx(naive, rel=1e-12)
    # a logit of 50 with label 0: the probability rounds to 1, yet the gradient is (1 - 0) / n
    z_sat, y0 = np.array([[[50.0]]]), np.array([[[0.0]]])
    assert loss.value(z_sat, y0)[0] == pytest.approx(50.0)
    assert loss.grad(z_sat, y0)[0, 0, 0] == pytest.approx(1.0)
    clipped = losses.get({"name": "clipped_binary_crossentropy", "eps": 1e-15})
    p_sat = np.array([[[1 / (1 + np.exp(-50.0))]]])
    assert p_sat[0, 0, 0] == 1.0
    assert clipped.value(p_sat, y0)[0] == pytest.approx(-math.log(1e-15), rel=1e-3)
    # through the sigmoid the gradient is p (1 - p) * ... = 0: the saturated unit is stuck
    assert activations.get("sigmoid").backward(None, p_sat, clipped.grad(p_sat, y0))[0, 0, 0] == 0


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_zero_init_gives_ln2_and_zero_gradients_on_balanced_classes(engine):
    X, y = make_moons(200, noise=0.2, random_state=0)
    model = Sequential([Dense(12, "relu", init="zeros"), Dense(6, "relu", init="zeros"),
                        Dense(1, "sigmoid", init="zeros")]).compile("binary_crossentropy")
    model.build(2, rng=0).fit(X, y, learning_rate=0.01, epochs=50, log_every=10, engine=engine)
    np.testing.assert_allclose(model.costs, math.log(2), rtol=0, atol=1e-12)
    model.compute_gradients(X, y)  # at the trained weights (a compiled fit keeps no pass)
    grads = model.gradients()
    assert all(np.all(g == 0) for g in grads[:-1])  # nothing flows back through zero weights
    assert np.all(np.abs(grads[-1]) < 1e-15)  # output bias: mean(0.5 - y) = 0, up to rounding
    assert model.evaluate(X, y)["accuracy"] == pytest.approx(0.5)


def test_one_sgd_step_worked_by_hand():
    # one linear unit, MSE: w <- w - lr * 2/n * sum(x (w x + b - y))
    X = np.array([[1.0], [2.0]])
    y = np.array([1.0, 3.0])
    model = Sequential([Dense(1, "linear", init={"name": "constant", "value": 0.5},
                              bias_init={"name": "constant", "value": 0.25})])
    model.compile("mse").build(1).fit(X, y, learning_rate=0.1, epochs=1)
    residual = 0.5 * X[:, 0] + 0.25 - y  # [-0.25, -1.75]
    w = 0.5 - 0.1 * 2 / 2 * np.sum(X[:, 0] * residual)
    b = 0.25 - 0.1 * 2 / 2 * np.sum(residual)
    assert model.layers[0].params["W"][0, 0, 0] == pytest.approx(w, abs=1e-15)
    assert model.layers[0].params["b"][0, 0, 0] == pytest.approx(b, abs=1e-15)
    assert model.costs == [pytest.approx(np.mean(residual**2))]


def test_momentum_and_adam_match_their_update_rules():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 2)), rng.standard_normal(8)
    for opt in ({"name": "sgd", "momentum": 0.9}, {"name": "adam"}):
        model = Sequential([Dense(1, init="ones")]).compile("mse", optimizer=opt).build(2)
        ref = model.take([0])
        model.fit(X, y, learning_rate=0.05, epochs=3)
        # the same three steps written out
        w, b = ref.layers[0].params["W"][0].copy(), ref.layers[0].params["b"][0].copy()
        state = {}
        for t in range(1, 4):
            r = X @ w + b - y[:, None]
            gw, gb = 2 * X.T @ r / 8, 2 * r.sum(0, keepdims=True) / 8
            for key, p, g in (("w", w, gw), ("b", b, gb)):
                if opt["name"] == "sgd":
                    v = state[key] = 0.9 * state[key] + g if key in state else g
                    p -= 0.05 * v
                else:
                    m, s = state.get(key, (0 * g, 0 * g))
                    m, s = 0.9 * m + 0.1 * g, 0.999 * s + 0.001 * g * g
                    state[key] = (m, s)
                    p -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(model.layers[0].params["W"][0], w, rtol=1e-12)
        np.testing.assert_allclose(model.layers[0].params["b"][0], b, rtol=1e-12)


# --- replicas ---------------------------------------------------------------------------------

VARIANTS = {"he": "he_normal", "glorot": "glorot_uniform", "lecun": "lecun_normal"}
SEEDS = [3, 11]


def _moons_net(init=None):
    kw = {} if init is None else {"init": init}
    return Sequential([Dense(12, "relu", **kw), Dense(6, "relu", **kw),
                       Dense(1, "sigmoid", **kw)]).compile("binary_crossentropy")


def _standalone(init, seed):
    return _moons_net(init).build(2, rng=np.random.SeedSequence(seed))


def test_replica_init_is_bit_identical_to_standalone_model():
    batched = _moons_net().build(2, **sweep(VARIANTS, SEEDS))
    assert batched.replicas == 6
    r = 0
    for _name, init in VARIANTS.items():
        for seed in SEEDS:
            alone = _standalone(init, seed)
            for layer, ref in zip(batched.layers, alone.layers, strict=True):
                assert np.array_equal(layer.params["W"][r], ref.params["W"][0])
                assert np.array_equal(layer.params["b"][r], ref.params["b"][0])
                assert layer.inits[r] == ref.init
            r += 1


@pytest.mark.parametrize("workers", [1, 2])
def test_replica_training_matches_standalone_runs(workers):
    X, y = make_moons(100, noise=0.2, random_state=1)
    batched = _moons_net().build(2, **sweep(VARIANTS, SEEDS))
    batched.fit(X, y, learning_rate=0.05, epochs=1000, log_every=250, workers=workers)
    r = 0
    for init in VARIANTS.values():
        for seed in SEEDS:
            alone = _standalone(init, seed).fit(X, y, learning_rate=0.05, epochs=1000,
                                                log_every=250)
            for layer, ref in zip(batched.layers, alone.layers, strict=True):
                for key in ("W", "b"):
                    np.testing.assert_allclose(layer.params[key][r], ref.params[key][0],
                                               rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose([c[r] for c in batched.costs], alone.costs, rtol=1e-10)
            r += 1
    assert batched.history["epoch"] == [0, 250, 500, 750, 999]
    assert batched.epochs_trained == 1000


def test_minibatch_replicas_shuffle_like_standalone_models():
    X, y = make_moons(60, noise=0.2, random_state=2)
    batched = _moons_net("he_normal").build(2, rng=[np.random.SeedSequence(s) for s in SEEDS])
    batched.fit(X, y, learning_rate=0.1, epochs=20, batch_size=16, log_every=5)
    for r, seed in enumerate(SEEDS):
        alone = _standalone("he_normal", seed).fit(X, y, learning_rate=0.1, epochs=20,
                                                   batch_size=16, log_every=5)
        np.testing.assert_allclose(batched.layers[0].params["W"][r], alone.layers[0].params["W"][0],
                                   rtol=1e-10)


def test_per_replica_data_and_single_model_outputs():
    Xs = np.stack([make_moons(50, noise=0.2, random_state=s)[0] for s in range(3)])
    ys = np.stack([make_moons(50, noise=0.2, random_state=s)[1] for s in range(3)])
    model = _moons_net("he_normal").build(2, rng=0, replicas=3)
    model.fit(Xs, ys, learning_rate=0.05, epochs=5)
    assert model.predict(Xs).shape == (3, 50, 1)
    assert model.evaluate(Xs, ys)["accuracy"].shape == (3,)
    for r in range(3):  # replica r saw only its own data set
        alone = model.take([r])
        assert alone.evaluate(Xs[r], ys[r])["loss"] == pytest.approx(
            model.evaluate(Xs, ys)["loss"][r], rel=1e-12)
    single = _moons_net("he_normal").build(2, rng=0)
    assert single.predict(Xs[0]).shape == (50, 1)
    assert isinstance(single.evaluate(Xs[0], ys[0])["accuracy"], float | np.floating)


def test_sources_way_of_use_works():
    X, y = make_moons(400, noise=0.2, random_state=0)
    from initlab import NeuralNetwork

    model = NeuralNetwork()
    model.add(Dense(units=12, activation="relu", initializer="he"))
    model.add(Dense(units=6, activation="relu", initializer="he"))
    model.add(Dense(units=1, activation="sigmoid"))
    model.compile(loss="binary_crossentropy")
    model.fit(X, y, learning_rate=0.01, epochs=3000, log_every=1000)
    assert len(model.costs) == 4 and model.costs[-1] < model.costs[0]
    assert model.evaluate(X, y)["accuracy"] > 0.8
    assert ((model.predict(X) > 0.5)[:, 0] == y).mean() == model.evaluate(X, y)["accuracy"]
    assert repr(model.layers[0]) == "Dense(2 -> 12, relu, init=he_normal)"


def test_hooks_see_every_layer_and_remove_themselves():
    X, y = make_moons(30, noise=0.2, random_state=0)
    model = _moons_net("he_normal").build(2, rng=0, replicas=2)
    seen = []
    with model.register_hook("forward", lambda i, layer, t: seen.append(("f", i, t.a.shape))), \
            model.register_hook("backward", lambda i, layer, g: seen.append(("b", i, g.dz.shape))):
        model.fit(X, y, epochs=1)
    assert seen == [("f", 0, (2, 30, 12)), ("f", 1, (2, 30, 6)), ("f", 2, (2, 30, 1)),
                    ("b", 2, (2, 30, 1)), ("b", 1, (2, 30, 6)), ("b", 0, (2, 30, 12))]
    model.fit(X, y, epochs=1)
    assert len(seen) == 6


def test_gradients_without_parameter_gradients_give_the_hooks_the_same_dz():
    from initlab.nn import Residual

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 2, 20)
    model = Sequential([Dense(6, "tanh", init="he_normal"),
                        Residual([Dense(6, "relu", init="he_normal"), Dense(6)]),
                        Dense(1, "sigmoid")]).compile("binary_crossentropy").build(4, rng=1)
    seen = {True: {}, False: {}}
    for param_grads in (True, False):
        with model.register_hook("backward", lambda i, layer, g, p=param_grads:
                                 seen[p].__setitem__(i, g.dz.copy())):
            cost = model.compute_gradients(X, y, param_grads=param_grads)
        if param_grads:
            full_cost, W_grad = cost, model.grads[0]["W"]
    assert cost == full_cost and W_grad.shape == (1, 4, 6) and np.any(W_grad != 0)
    for i in range(3):
        np.testing.assert_array_equal(seen[False][i], seen[True][i])
    assert all(grads == {} for grads in model.grads)


def test_float32_on_request():
    X, y = make_moons(40, noise=0.2, random_state=0)
    model = _moons_net("he_normal").build(2, rng=0, dtype=np.float32)
    ref = _moons_net("he_normal").build(2, rng=0)
    np.testing.assert_array_equal(model.layers[0].params["W"],
                                  ref.layers[0].params["W"].astype(np.float32))
    model.fit(X, y, epochs=3)
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model.predict(X).dtype == np.float32
    with pytest.raises(ValueError, match="float64"):
        gradcheck(model, X, y)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: Dense(4, "rleu"), r"activation='rleu' \(did you mean 'relu'\?\)"),
    (lambda: Dense(4, init="he_normla"), r"'he_normla' \(did you mean 'he_normal'\?\)"),
    (lambda: Dense(0), "units must be a positive int; got units=0"),
    (lambda: Sequential([Dense(1)]).compile("binary_crossentropyy"),
     r"loss='binary_crossentropyy' \(did you mean 'binary_crossentropy'\?\)"),
    (lambda: Sequential([Dense(1, "relu")]).compile("binary_crossentropy"),
     "works on a sigmoid output.*activation=relu"),
    (lambda: Sequential([Dense(1)]).compile("mse", optimizer="adamm"),
     r"optimizer='adamm' \(did you mean 'adam'\?\)"),
])
def test_bad_configuration_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_data_is_named():
    model = _moons_net("he_normal").build(2, rng=0)
    X, y = make_moons(20, noise=0.2, random_state=0)
    with pytest.raises(ValueError, match=r"X and y disagree: X.shape=\(20, 2\).*\(19, 1\)"):
        model.fit(X, y[:19])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN or inf"):
        model.fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(bad)
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}; got y containing \[2.0\]"):
        model.fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match="X has 3 features; the model was built for 2"):
        model.fit(np.ones((20, 3)), y)
    with pytest.raises(ValueError, match="epochs must be an int >= 0; got epochs=-1"):
        model.fit(X, y, epochs=-1)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0; got "
                                         "learning_rate=-0.1"):
        model.fit(X, y, learning_rate=-0.1)
    with pytest.raises(ValueError, match="class labels in \\[0, 3\\)"):
        Sequential([Dense(3, "softmax")]).compile("softmax_crossentropy").fit(X, y + 5)
    with pytest.raises(ValueError, match="disagree"):
        _moons_net().build(2, rng=[0, 1], variants=["he", "he", "he"])


def test_fit_and_evaluate_on_no_samples_name_the_shape():
    model = Sequential([Dense(3, "relu"), Dense(1, "sigmoid")]).compile("binary_crossentropy")
    model.build(2, rng=0)
    for call in (lambda: model.fit(np.zeros((0, 2)), np.zeros(0), epochs=1),
                 lambda: model.evaluate(np.zeros((0, 2)), np.zeros(0))):
        with pytest.raises(ValueError, match=r"X has no samples; got X.shape=\(0, 2\)"):
            call()


def test_build_refuses_weights_larger_than_the_machine_before_allocating():
    model = Sequential([Dense(1_000_000, "relu"), Dense(1_000_000), Dense(2)])
    with pytest.raises(ValueError, match=r"weights need .* TiB \(5 replicas x 1,000,006,000,002 "
                                         r"parameters, float64\); this machine has"):
        model.build(2, rng=0, replicas=5)
    assert not model.replicas  # nothing was built
