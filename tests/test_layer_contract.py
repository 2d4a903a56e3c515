"""The layer contract (initlab.nn.contract.Layer), checked on every layer kind alike, as
scikit-learn's estimator checks: a new layer kind adds one line to LAYERS and must pass all.

Each kind is checked as the middle layer of a small model, Dense -> layer -> Dense, with R
replicas whose parameters and buffers differ, on data of N_IN features.
"""

import numpy as np
import pytest

from initlab.nn import (
    BatchNorm,
    Dense,
    Gradients,
    Layer,
    LayerNorm,
    Residual,
    Sequential,
    Trace,
    gradcheck,
)
from initlab.probes import Probe

WIDTH, N_IN, N, R = 5, 3, 12, 3
SEEDS = [20, 21, 22]

LAYERS = [
    pytest.param(lambda: Dense(WIDTH, "tanh", init="he_normal"), id="dense"),
    pytest.param(lambda: Residual([Dense(WIDTH, "tanh", init="he_normal"),
                                   Dense(WIDTH, init="he_normal")]), id="residual"),
    pytest.param(lambda: LayerNorm("tanh"), id="layernorm"),
    pytest.param(lambda: BatchNorm("tanh"), id="batchnorm"),
]


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, N_IN)), rng.integers(0, 2, N)


def _model(make, seeds=SEEDS):
    """Dense -> the layer -> Dense, one replica per seed, each from SeedSequence(seed)."""
    model = Sequential([Dense(WIDTH, "tanh", init="he_normal"), make(), Dense(1, "sigmoid")])
    return model.compile("bce").build(N_IN, rng=[np.random.SeedSequence(s) for s in seeds])


def _varied(make):
    """A model whose layer under test has replicas that differ in every parameter (a norm
    layer's all start at gamma 1, beta 0) and, after one training pass, in every buffer."""
    model = _model(make)
    rng = np.random.default_rng(1)
    for value in model.layers[1].params.values():
        value += rng.normal(0.0, 0.3, value.shape)
    X, _ = _data()
    model.forward(model.prepare(X)[0], training=True)
    return model


def _input(model):
    """What the layer under test receives: the first layer's output, (R, N, WIDTH)."""
    X, _ = _data()
    return model.layers[0].forward(model.prepare(X)[0]).out


def _state(layer):
    return {**{f"param {k}": v for k, v in layer.params.items()},
            **{f"buffer {k}": v for k, v in layer.buffers.items()}}


@pytest.mark.parametrize("make", LAYERS)
def test_is_a_layer_before_and_after_build(make):
    assert isinstance(make(), Layer)  # Sequential.add checks this before build
    layer = _model(make).layers[1]
    assert isinstance(layer, Layer)
    assert layer.fan_in == WIDTH and layer.units == WIDTH
    assert isinstance(repr(layer), str)


@pytest.mark.parametrize("make", LAYERS)
def test_params_and_buffers_have_the_replica_axis_first(make):
    layer = _model(make).layers[1]
    assert layer.params
    for name, value in _state(layer).items():
        assert value.shape[0] == R, name
        assert value.dtype == np.float64, name
    for key in (layer.weight_key, layer.bias_key):
        assert key is None or key in layer.params
    units = layer.unit_params()
    assert units is None or units.shape[:2] == (R, layer.units)


@pytest.mark.parametrize("make", LAYERS)
def test_take_gives_copies_of_those_replicas(make):
    layer = _varied(make).layers[1]
    for r in range(R):
        sub = layer.take([r])
        for name, value in _state(sub).items():
            np.testing.assert_array_equal(value, _state(layer)[name][[r]], err_msg=name)
            value += 1.0  # a copy: the original is untouched
            assert not np.array_equal(value, _state(layer)[name][[r]]), name


@pytest.mark.parametrize("make", LAYERS)
def test_replica_r_is_initialised_as_a_stand_alone_model(make):
    model = _model(make)
    for r, seed in enumerate(SEEDS):
        alone = _model(make, seeds=[seed])
        for i, (batched, single) in enumerate(zip(model.layers, alone.layers, strict=True)):
            for name, value in _state(batched).items():
                np.testing.assert_array_equal(value[r], _state(single)[name][0],
                                              err_msg=f"layer {i} {name}")


@pytest.mark.parametrize("make", LAYERS)
def test_forward_returns_a_trace_of_the_output_width(make):
    model = _varied(make)
    layer, x = model.layers[1], _input(model)
    for training in (True, False):
        trace = layer.forward(x, training=training)
        assert isinstance(trace, Trace)
        assert trace.z.shape == trace.a.shape == (R, N, layer.units)
        assert np.all(np.isfinite(trace.a))
        assert layer.forward(x, training=training, activate=False).out.shape == trace.z.shape


@pytest.mark.parametrize("make", LAYERS)
def test_backward_returns_a_gradient_of_every_parameter(make):
    model = _varied(make)
    layer, x = model.layers[1], _input(model)
    upstream = np.random.default_rng(2).standard_normal((R, N, layer.units))
    grads = layer.backward(layer.forward(x, training=True), upstream.copy())
    assert isinstance(grads, Gradients)
    assert grads.dx is not None and grads.dx.shape == x.shape
    assert grads.dz.shape == (R, N, layer.units)
    assert set(grads.params) == set(layer.params)
    for name, value in grads.params.items():
        assert value.shape == layer.params[name].shape, name


@pytest.mark.parametrize("make", LAYERS)
def test_backward_skips_what_was_not_asked_for(make):
    model = _varied(make)
    layer, x = model.layers[1], _input(model)
    upstream = np.random.default_rng(2).standard_normal((R, N, layer.units))
    full = layer.backward(layer.forward(x, training=True), upstream.copy())
    lean = layer.backward(layer.forward(x, training=True), upstream.copy(),
                          need_input_grad=False, need_param_grads=False)
    assert lean.params == {}
    np.testing.assert_allclose(lean.dz, full.dz, rtol=0, atol=1e-15)
    assert lean.dx is None


@pytest.mark.parametrize("make", LAYERS)
def test_gradcheck_passes_inside_a_small_model(make):
    X, y = _data()
    result = gradcheck(_varied(make), X, y)
    assert result.ok and set(result.per_layer()) == {0, 1, 2}


@pytest.mark.parametrize("make", LAYERS)
def test_a_probe_reads_every_layer_of_every_replica(make):
    X, y = _data()
    model = _varied(make)
    table = Probe(model).record(X, y)
    pairs = sorted(zip(table.column("replica").tolist(), table.column("layer").tolist(),
                       strict=True))
    assert pairs == [(r, i) for r in range(R) for i in range(len(model.layers))]
    assert np.all(np.isfinite(table.column("act_std")))


@pytest.mark.parametrize("make", LAYERS)
def test_put_writes_back_what_take_took(make):
    model = _varied(make)
    before = [{k: v.copy() for k, v in _state(layer).items()} for layer in model.layers]
    model.put([1], model.take([1]))  # a round trip changes nothing
    for layer, saved in zip(model.layers, before, strict=True):
        for name, value in _state(layer).items():
            np.testing.assert_array_equal(value, saved[name], err_msg=name)
    sub = model.take([1])
    for layer in sub.layers:
        for value in _state(layer).values():
            value *= 2.0
    model.put([1], sub)
    for layer, sub_layer, saved in zip(model.layers, sub.layers, before, strict=True):
        for name, value in _state(layer).items():
            np.testing.assert_array_equal(value[1], _state(sub_layer)[name][0], err_msg=name)
            np.testing.assert_array_equal(value[[0, 2]], saved[name][[0, 2]], err_msg=name)
