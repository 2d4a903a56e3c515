"""LayerNorm, BatchNorm and residual blocks in the compiled kernels: fit(engine="numba") ends
where the NumPy reference (fit(engine="numpy")) ends, for random stacks of Dense layers,
normalization layers and residual blocks of them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from initlab.nn import SGD, Adam, BatchNorm, Dense, LayerNorm, Residual, Sequential

pytest.importorskip("numba")

HIDDEN = ["linear", "tanh", "relu", "sigmoid", "gelu", {"name": "leaky_relu", "slope": 0.1}]
OUTPUTS = [("binary_crossentropy", "sigmoid", 1), ("softmax_crossentropy", "linear", 3),
           ("mean_squared_error", "linear", 2)]
OPTIMIZERS = {"sgd": lambda lr: SGD(lr), "momentum": lambda lr: SGD(lr, momentum=0.9),
              "nesterov": lambda lr: SGD(lr, momentum=0.8, nesterov=True),
              "adam": lambda lr: Adam(lr / 10)}


def _layers(blocks, out, first_norm, d):
    """blocks: (kind, width, activation, bias, eps, momentum); a Dense before a norm layer
    is linear (the norm layer applies the activation); a residual block's branch is Dense
    (width, activation) then Dense back to the block's input width ("residual"), or Dense,
    LayerNorm(activation) and Dense ("residual-norm")."""
    layers = [LayerNorm(eps=1e-3)] if first_norm else []
    now = d  # the width the next block sees
    for kind, width, act, bias, eps, momentum in blocks:
        bias_init = {"name": "normal", "std": 0.1}
        if kind == "dense":
            layers.append(Dense(width, act, use_bias=bias, bias_init=bias_init))
        elif kind.startswith("residual"):
            branch = [Dense(width, "linear" if kind == "residual-norm" else act, use_bias=bias,
                            bias_init=bias_init)]
            branch += [LayerNorm(act, eps)] if kind == "residual-norm" else []
            layers.append(Residual([*branch, Dense(now, use_bias=bias, bias_init=bias_init)]))
            continue  # the width stays
        else:
            layers.append(Dense(width, use_bias=bias, bias_init=bias_init))
            layers.append(LayerNorm(act, eps) if kind == "layer" else BatchNorm(act, eps,
                                                                                momentum))
        now = width
    loss, act, k = out
    return layers + [Dense(k, act)], loss


def _train(config, engine, perturb=0.0):
    layers, loss = _layers(config["blocks"], config["out"], config["first_norm"], config["d"])
    model = Sequential(layers).compile(loss, OPTIMIZERS[config["opt"]](config["lr"]))
    model.build(config["d"], rng=[config["seed"] + r for r in range(config["R"])],
                dtype=config["dtype"])
    for i, p in enumerate(model.parameters()):  # gamma and beta off 1 and 0, and a perturbation
        rng = np.random.default_rng(config["seed"] + i)
        p += rng.normal(0, 0.2, p.shape).astype(p.dtype)
        p *= 1.0 + perturb * rng.choice([-1.0, 1.0], p.shape)  # random signs: not a rescaling,
        # to which a normalized network is blind
    rng = np.random.default_rng(config["seed"])
    n, R, d, k = config["n"], config["R"], config["d"], config["out"][2]
    X = rng.standard_normal((R, n, d) if config["per_replica"] else (n, d))
    y = (rng.integers(0, 2, (n, 1)).astype(float) if k == 1 else
         rng.integers(0, k, n) if config["out"][0] == "softmax_crossentropy" else
         rng.standard_normal((n, k)))
    for _ in range(config["fits"]):  # a second fit continues the state (and BN's statistics)
        budget = {"steps": config["steps"]} if config.get("steps") else \
            {"epochs": config["epochs"]}  # steps: the last epoch may be partial
        model.fit(X, y, batch_size=config["batch"], shuffle=config["shuffle"], log_every=1,
                  engine=engine, **budget)
    return model


def _state(model):
    """Every parameter, running statistic, logged cost and optimizer state entry, flat."""
    arrays = [*model.parameters(), *(b for layer in model.layers
                                     for b in getattr(layer, "buffers", {}).values())]
    arrays += [np.array(model.history["cost"])]
    arrays += [np.asarray(v) for entry in model.optimizer.state for v in entry.values()]
    return arrays


def _worst(a, b):
    worst = 0.0
    for x, y in zip(_state(a), _state(b), strict=True):
        assert x.shape == y.shape
        scale = max(1.0, float(np.max(np.abs(y)))) if y.size else 1.0
        if y.size:
            worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


@st.composite
def configs(draw, dtype=np.float64):
    n = draw(st.integers(2, 40))
    kinds = ["dense", "layer", "batch", "residual", "residual-norm"]
    blocks = [(draw(st.sampled_from(kinds)), draw(st.integers(2, 12)),
               draw(st.sampled_from(HIDDEN)), draw(st.booleans()),
               draw(st.sampled_from([1e-5, 1e-3, 0.1])), draw(st.sampled_from([0.1, 0.5, 1.0])))
              for _ in range(draw(st.integers(1, 3)))]
    batch = draw(st.one_of(st.none(), st.integers(2, n + 2)))
    per_epoch = 1 if batch is None or batch >= n else -(-n // batch)
    return dict(blocks=blocks, out=draw(st.sampled_from(OUTPUTS)),
                first_norm=draw(st.booleans()), opt=draw(st.sampled_from(list(OPTIMIZERS))),
                lr=draw(st.floats(0.005, 0.05)), d=draw(st.integers(2, 5)), n=n,
                R=draw(st.integers(1, 3)), batch=batch, shuffle=draw(st.booleans()),
                epochs=draw(st.integers(1, max(1, min(20, 100 // per_epoch)))),
                steps=draw(st.one_of(st.none(), st.integers(1, 60))),
                fits=draw(st.integers(1, 2)), per_replica=draw(st.booleans()),
                dtype=dtype, seed=draw(st.integers(0, 1000)))


def _batch_norm_batches_of_one(config):
    batch, n = config["batch"], config["n"]
    size = n if batch is None or batch >= n else batch
    return any(b[0] == "batch" for b in config["blocks"]) and 1 in (size, n % size)


@settings(max_examples=int(os.environ.get("INITLAB_LAYER_EXAMPLES", 200)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_stacks_of_the_kernels_layers_match_the_engine_in_float64(config):
    assume(not _batch_norm_batches_of_one(config))  # the engines both refuse it (tested below)
    reference = _train(config, "numpy")
    costs = np.array(reference.history["cost"])
    assume(np.all(np.isfinite(costs)) and costs.max() < 1e6)
    # a start moved by 1e-12 that moves the end by more than 1e-8 amplifies rounding (1e-16 a
    # step) past 1e-10: such runs (Adam on a gradient that is rounding noise, as a bias before
    # a normalization has) cannot agree bit for bit, nor to 1e-10
    assume(_worst(_train(config, "numpy", perturb=1e-12), reference) < 1e-8)
    # Adam divides a gradient by its own size: an entry that is a fraction f of the largest
    # carries the rounding of the larger terms that cancelled in it (1e-16 of the largest), a
    # relative 1e-16 / f, and Adam makes that an error of lr 1e-16 / f in its update. Where
    # that is over the 1e-10 asked below (f < lr 1e-6: a second moment under (lr 1e-6)^2 of
    # the largest, and not exactly 0) the entry is rounding on either engine: a shift that a
    # BatchNorm removes (beta, or a bias before it through linear maps), or a bias before a
    # LayerNorm of two units, whose gradients nearly cancel
    if config["opt"] == "adam":
        second = np.concatenate([entry["v"].ravel() for entry in reference.optimizer.state])
        floor = (config["lr"] * 1e-6) ** 2 * second.max()
        assume(not np.any((second > 0) & (second < floor)))
    compiled = _train(config, "numba")
    assert compiled.history["engine"] == ["numba"] * config["fits"]
    assert _worst(compiled, reference) < 1e-10


def _config(**change):
    config = dict(blocks=[("batch", 6, "relu", False, 1e-5, 0.1), ("layer", 5, "tanh", True,
                                                                     1e-5, 0.1)],
                  out=OUTPUTS[1], first_norm=False, opt="adam", lr=0.02, d=3, n=30, R=3,
                  batch=8, shuffle=True, epochs=10, fits=2, per_replica=False,
                  dtype=np.float64, seed=5)
    return {**config, **change}


def test_a_fixed_normalized_stack_matches_and_its_running_statistics_moved():
    config = _config()
    reference, compiled = _train(config, "numpy"), _train(config, "numba")
    assert _worst(compiled, reference) < 1e-10
    bn = compiled.layers[1]
    assert isinstance(bn, BatchNorm) and not np.allclose(bn.buffers["running_var"], 1.0)
    X = np.random.default_rng(0).standard_normal((7, 3))
    np.testing.assert_allclose(compiled.predict(X), reference.predict(X), rtol=1e-10)


def test_float32_normalized_stacks_stay_close_to_the_engine():
    config = _config(dtype=np.float32, opt="momentum")
    reference, compiled = _train(config, "numpy"), _train(config, "numba")
    assert all(p.dtype == np.float32 for p in compiled.parameters())
    assert 0 < _worst(compiled, reference) < 1e-4  # float32 rounding, summed in float64


def test_batch_norm_refuses_a_batch_of_one_sample_on_both_engines():
    config = _config(n=17, batch=8)  # 8 + 8 + 1
    for engine in ("numpy", "numba"):
        with pytest.raises(ValueError, match="at least 2 samples"):
            _train(config, engine)


def test_a_fixup_residual_stack_matches_from_its_identity_start():
    """Fixup's start: every branch's last layer zero, so each block is the identity; its
    scale and branches then train (the blocks' sums and their skip gradients)."""
    from initlab import schemes

    def fitted(engine):
        blocks = [Residual([Dense(8, "relu"), Dense(8)]) for _ in range(6)]
        model = Sequential([Dense(8, "relu"), *blocks, Dense(1, "sigmoid")]).compile(
            "binary_crossentropy", SGD(0.05, momentum=0.9))
        model.build(2, rng=[3, 4])
        schemes.fixup(model)
        X = np.random.default_rng(0).standard_normal((50, 2))
        y = (X[:, :1] * X[:, 1:] > 0).astype(float)
        return model.fit(X, y, epochs=30, log_every=1, engine=engine)

    reference, compiled = fitted("numpy"), fitted("numba")
    assert compiled.history["engine"] == ["numba"]
    assert not np.allclose(compiled.layers[1].scale, 1.0)  # the scales trained
    assert _worst(compiled, reference) < 1e-10


def test_train_checks_the_layers_beside_dense():
    from initlab.nn import activations, kernels, losses

    tanh, loss = activations.get("tanh"), losses.get("mean_squared_error")
    W = [np.full((1, 2, 3), 0.1), np.ones((1, 1, 1)), np.full((1, 3, 1), 0.1)]
    X, y = np.ones((4, 2)), np.ones((4, 1))

    def train(extras, weights=W, biases=(None, None, None), **kw):
        return kernels.train(list(weights), list(biases), [tanh] * 3, loss, SGD(0.1), X, y,
                             epochs=1, extras=extras, **kw)

    with pytest.raises(ValueError, match="start=0"):  # a block from the input (width 2) to 3
        train([None, kernels.Skip(0), None])
    with pytest.raises(ValueError, match="last layer must be Dense"):
        train([None, None, kernels.Skip(0)])
    with pytest.raises(ValueError, match=r"weights\[1\] must be \(1, 1, 3\)"):
        train([None, kernels.Norm("layer", 1e-5), None])  # gamma of width 3, not 1
    gamma = [W[0], np.ones((1, 1, 3)), W[2]]
    with pytest.raises(ValueError, match="its beta"):
        train([None, kernels.Norm("layer", 1e-5), None], weights=gamma)
    with pytest.raises(ValueError, match="gemm layout only"):
        train([None, kernels.Norm("layer", 1e-5), None], weights=gamma,
              biases=(None, np.zeros((1, 1, 3)), None), layout="lanes")
