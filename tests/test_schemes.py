"""Model-level schemes, each by its postcondition."""

import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from initlab import initializers
from initlab.nn import Dense, Residual, Sequential, gradcheck, sweep
from initlab.schemes import fixup, lsuv, self_normalizing, zero_init, zero_matrix


def _deep(activation="relu", depth=8, width=64, replicas=3):
    return Sequential([Dense(width, activation, bias_init={"name": "normal", "std": 0.1})
                       for _ in range(depth)] + [Dense(10, "softmax")]).compile(
        "softmax_crossentropy").build(32, rng=0, replicas=replicas)


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_lsuv_brings_every_layer_to_unit_std_on_the_probe_batch(activation):
    model = _deep(activation)
    X = np.random.default_rng(1).standard_normal((200, 32)) * 3.0
    result = lsuv(model, X, tol=0.01)
    assert result.ok and result.converged.shape == (9, 3)
    # recompute the postcondition independently: each layer's pre-activation std, per replica
    a = X
    for layer in model.layers:
        z = a @ layer.params["W"] + layer.params["b"]
        std = z.reshape(3, -1).std(axis=1)
        assert np.all(np.abs(std - 1.0) < 0.01)
        a = layer.activation.forward(z)
    assert np.all(result.iterations <= 10)


def test_lsuv_reports_what_did_not_converge_within_its_cap():
    model = _deep("tanh")
    X = np.random.default_rng(1).standard_normal((100, 32))
    result = lsuv(model, X, tol=1e-14, max_iter=1)  # one scaling cannot hit 1e-14 with biases
    assert not result.ok
    assert np.all(result.iterations == 1)
    assert "NOT converged" in str(result)


def test_lsuv_starts_from_each_replicas_own_orthogonal_draw():
    model = _deep("relu", depth=2, width=32)
    lsuv(model, np.random.default_rng(1).standard_normal((100, 32)))
    W = model.layers[0].params["W"]
    for r in range(3):  # a scaled orthogonal matrix: W^T W = s^2 I
        gram = W[r].T @ W[r]
        np.testing.assert_allclose(gram, gram[0, 0] * np.eye(32), atol=1e-10)
    assert not np.allclose(W[0], W[1])


def test_lsuv_errors_name_the_argument():
    model = _deep(depth=1)
    with pytest.raises(ValueError, match="tol must be finite and > 0; got tol=-1"):
        lsuv(model, np.ones((10, 32)), tol=-1)
    with pytest.raises(ValueError, match="max_iter must be a positive int; got max_iter=0"):
        lsuv(model, np.ones((10, 32)), max_iter=0)


@pytest.mark.parametrize("shape,call", [
    ((10, 32), "model.build(32, rng=...) for X's 32 features"),
    ((3, 10, 32), "model.build(32, rng=..., replicas=3) for X's 32 features"),
    ((32,), "model.build(X.shape[1], rng=...)"),
])
def test_lsuv_on_an_unbuilt_model_says_how_to_build_it(shape, call):
    model = Sequential([Dense(3)]).compile("mse")
    with pytest.raises(ValueError) as err:
        lsuv(model, np.ones(shape))
    assert str(err.value) == (f"build the model before LSUV: {call} (LSUV starts from weights "
                              f"drawn from the model's own streams, so their seed is yours to "
                              f"choose)")
    assert model.replicas == 0  # not built behind the caller's back with an unchosen seed


def test_lsuv_runs_on_the_model_built_as_its_error_says():
    X = np.random.default_rng(1).standard_normal((3, 10, 32))
    model = Sequential([Dense(3)]).compile("mse").build(32, rng=0, replicas=3)
    assert lsuv(model, X).ok


def test_zero_matrices_are_exact():
    np.testing.assert_array_equal(zero_matrix(5, 5), np.eye(5))
    np.testing.assert_array_equal(zero_matrix(6, 4), np.eye(6, 4))  # shrinking: partial I
    # expanding 3 -> 6: m = 3, c = 2^(-1), the first 6 x 3 block of H_8, stored transposed
    expected = 0.5 * hadamard(8)[:6, :3].T
    np.testing.assert_array_equal(zero_matrix(3, 6), expected)
    assert set(np.unique(np.abs(zero_matrix(10, 100)))) == {2.0 ** (-(7 - 1) / 2)}


def test_zero_init_is_deterministic_and_the_same_in_every_replica():
    model = Sequential([Dense(16, "relu"), Dense(16, "relu"), Dense(4)]).compile("mse")
    model.build(8, rng=0, replicas=2)
    zero_init(model)
    for layer in model.layers:
        W = layer.params["W"]
        np.testing.assert_array_equal(W[0], W[1])
        np.testing.assert_array_equal(W[0], zero_matrix(layer.fan_in, layer.units))
        assert np.all(layer.params["b"] == 0)


def test_delta_orthogonal_is_orthogonal_at_the_centre_and_zero_elsewhere():
    kernel = initializers.delta_orthogonal((3, 5, 8, 16), gain=2.0, rng=0)
    centre = kernel[1, 2]
    np.testing.assert_allclose(centre @ centre.T, 4.0 * np.eye(8), atol=1e-10)
    mask = np.ones((3, 5), dtype=bool)
    mask[1, 2] = False
    assert np.all(kernel[mask] == 0)
    with pytest.raises(ValueError, match="needs a conv kernel"):
        initializers.delta_orthogonal((8, 16), rng=0)
    assert initializers.get("delta").name == "delta_orthogonal"
    assert math.isclose(float(np.sum(kernel**2)), 4.0 * 8, rel_tol=1e-12)


# --- residual blocks and Fixup ------------------------------------------------------------------


def _resnet(blocks=3, width=6, m=2, replicas=2, head=True):
    layers = [Dense(width, "relu", init="he_normal")]
    layers += [Residual([Dense(width, "relu", init="he_normal",
                               bias_init={"name": "normal", "std": 0.1}) for _ in range(m - 1)]
                        + [Dense(width, init="he_normal",
                                 bias_init={"name": "normal", "std": 0.1})])
               for _ in range(blocks)]
    if head:
        layers.append(Dense(1, "sigmoid"))
    return Sequential(layers)


def test_residual_blocks_pass_the_gradient_check():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 4)), rng.integers(0, 2, 12)
    model = _resnet().compile("binary_crossentropy").build(4, rng=1, replicas=2)
    model.layers[1].params["scale"][...] = 0.7  # a non-trivial multiplier, checked too
    result = gradcheck(model, X, y)
    assert result.ok and (1, "scale") in result.errors and (2, "0.W") in result.errors


def test_fixup_makes_the_residual_stack_the_identity_map():
    model = Sequential([Residual([Dense(5, "relu"), Dense(5, "relu"), Dense(5)])
                        for _ in range(4)]).compile("mse").build(5, rng=0, replicas=3)
    X = np.random.default_rng(2).standard_normal((20, 5))
    assert not np.allclose(model.predict(X), X)
    fixup(model)
    np.testing.assert_array_equal(model.predict(X), np.broadcast_to(X, (3, 20, 5)))
    # the branch layers but the last are He scaled by L^(-1/(2m-2)) = 4^(-1/4)
    W = np.concatenate([b.branch[0].params["W"].ravel() for b in model.layers])
    assert np.std(W) == pytest.approx(math.sqrt(2 / 5) * 4 ** -0.25, rel=0.15)
    assert all(np.all(b.branch[-1].params["W"] == 0) for b in model.layers)


def test_fixup_output_layer_is_zero_and_training_moves_it():
    from sklearn.datasets import make_moons

    X, y = make_moons(100, noise=0.2, random_state=0)
    model = _resnet(blocks=8).compile("binary_crossentropy").build(2, rng=0, replicas=2)
    fixup(model)
    assert np.all(model.layers[-1].params["W"] == 0)
    model.fit(X, y, learning_rate=0.1, epochs=300, log_every=100)
    assert model.costs[-1].max() < model.costs[0].min() - 0.1  # ln 2 at start, then learns


def test_fixup_zeroes_only_the_output_layer_not_a_head_before_it():
    from sklearn.datasets import make_moons

    X, y = make_moons(100, noise=0.2, random_state=0)
    model = _resnet(blocks=4).compile("binary_crossentropy").build(2, rng=0)
    model.layers.insert(-1, Dense(6, "relu", init="he_normal"))  # a hidden head layer
    model.build(2, rng=0)
    fixup(model)
    head = model.layers[-2].params["W"].copy()
    assert np.std(head) == pytest.approx(math.sqrt(2 / 6), rel=0.5)  # kept its He draw
    assert np.all(model.layers[-1].params["W"] == 0)
    model.fit(X, y, learning_rate=0.1, epochs=50)
    assert not np.allclose(model.layers[-2].params["W"], head)  # and it learns


def test_residual_replicas_train_like_standalone_models():
    from sklearn.datasets import make_moons

    X, y = make_moons(80, noise=0.2, random_state=1)
    seeds = [3, 4]
    batched = _resnet().compile("binary_crossentropy").build(2, **sweep({"he": None}, seeds))
    batched.fit(X, y, learning_rate=0.05, epochs=200, workers=2)
    for r, seed in enumerate(seeds):
        alone = _resnet().compile("binary_crossentropy").build(
            2, rng=np.random.SeedSequence(seed))
        alone.fit(X, y, learning_rate=0.05, epochs=200)
        for layer, ref in zip(batched.layers, alone.layers, strict=True):
            for key in layer.params:
                np.testing.assert_allclose(layer.params[key][r], ref.params[key][0],
                                           rtol=1e-10, atol=1e-13)


def test_residual_errors():
    with pytest.raises(ValueError, match="must end at its input's width 4"):
        Sequential([Residual([Dense(3)])]).compile("mse").build(4)
    with pytest.raises(ValueError, match="fixup needs a model with Residual blocks"):
        fixup(Sequential([Dense(2)]).compile("mse").build(2))


def test_a_scheme_applied_to_some_replicas_through_take_and_put():
    model = _deep("tanh", depth=3, width=16, replicas=4)
    X = np.random.default_rng(3).standard_normal((64, 32)) * 2
    before = [layer.params["W"].copy() for layer in model.layers]
    sub = model.take([1, 3])
    lsuv(sub, X)
    model.put([1, 3], sub)
    for layer, old in zip(model.layers, before, strict=True):
        np.testing.assert_array_equal(layer.params["W"][[0, 2]], old[[0, 2]])  # untouched
        assert not np.allclose(layer.params["W"][[1, 3]], old[[1, 3]])
    a = X
    for layer in model.layers[:-1]:
        z = a @ layer.params["W"] + layer.params["b"]
        assert np.all(np.abs(z[[1, 3]].reshape(2, -1).std(axis=1) - 1) < 0.1)
        a = layer.activation.forward(z)


def test_jacobian_of_a_residual_network_is_refused_clearly():
    from initlab.probes import jacobian_singular_values

    model = _resnet(head=False).compile("mse").build(2, rng=0)
    with pytest.raises(ValueError, match="Dense layers only"):
        jacobian_singular_values(model, np.ones((3, 2)))


# --- the self-normalizing pair ------------------------------------------------------------------


def _selu_stack(depth=30, width=256, replicas=2, init="he_normal"):
    layers = [Dense(width, "selu", init=init) for _ in range(depth)] + [Dense(1)]
    return Sequential(layers).compile("mse").build(width, rng=0, replicas=replicas)


def _activation_stats(model, X):
    stats = []
    with model.register_hook("forward", lambda i, layer, t: stats.append(
            (float(np.mean(t.a)), float(np.std(t.a))))):
        model.predict(X)
    return stats[:-1]  # the hidden layers


def test_self_normalizing_keeps_mean_0_and_std_1_where_he_init_grows():
    X = np.random.default_rng(1).standard_normal((512, 256))
    model = _selu_stack()
    grown = _activation_stats(model, X)  # He weights: q* is infinite for SELU at sigma_w^2 = 2
    assert grown[-1][1] > 3.0
    self_normalizing(model)
    stats = _activation_stats(model, X)
    assert all(abs(mean) < 0.15 and abs(std - 1) < 0.15 for mean, std in stats)
    W = np.concatenate([layer.params["W"].ravel() for layer in model.layers[:-1]])
    assert np.std(W) == pytest.approx(1 / math.sqrt(256), rel=0.01)  # LeCun: N(0, 1/fan_in)
    assert all(np.all(layer.params["b"] == 0) for layer in model.layers)


def test_self_normalizing_is_reproducible_and_refuses_other_units():
    a, b = self_normalizing(_selu_stack(depth=3, width=8)), self_normalizing(
        _selu_stack(depth=3, width=8))
    for la, lb in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(la.params["W"], lb.params["W"])
    assert not np.array_equal(a.layers[0].params["W"][0], a.layers[0].params["W"][1])
    relu = Sequential([Dense(4, "selu"), Dense(4, "relu"), Dense(1)]).compile("mse").build(2)
    with pytest.raises(ValueError, match=r"SELU hidden layers; got layer 1 with activation=relu"):
        self_normalizing(relu)
