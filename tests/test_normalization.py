"""LayerNorm and BatchNorm: gradients by finite differences, forward, backward and running
statistics against torch (float64), replicas against stand-alone models, and the
postcondition that they normalize."""

import numpy as np
import pytest

from initlab.nn import BatchNorm, Dense, Layer, LayerNorm, Residual, Sequential, gradcheck

NORMS = [LayerNorm, BatchNorm]
R, N, WIDTH = 3, 10, 6


def _data(n=20, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 2, n)


def _built(kind, width=WIDTH, replicas=R, seed=0, **kwargs):
    """A built layer whose replicas have different, non-trivial gamma and beta."""
    layer = kind(**kwargs)
    layer.build(width, replicas, np.dtype(np.float64))
    rng = np.random.default_rng(seed)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, (replicas, 1, width))
    layer.params["beta"][...] = rng.normal(0.0, 0.5, (replicas, 1, width))
    return layer


def _spread(model, seed=1):
    """Give every norm layer's replicas different gamma and beta (they start identical)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, LayerNorm | BatchNorm):
            layer.params["gamma"][...] = rng.uniform(0.5, 2.0, layer.params["gamma"].shape)
            layer.params["beta"][...] = rng.normal(0.0, 0.5, layer.params["beta"].shape)
    return model


# --- gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NORMS)
def test_gradcheck(kind):
    X, y = _data()
    # a linear Dense's bias right before BatchNorm has gradient exactly 0 (see the next test):
    # finite differences of it are rounding noise against 0, a relative error of ~1
    dense = Dense(6, "linear", init="he_normal", use_bias=kind is LayerNorm)
    model = Sequential([dense, kind("tanh"), Dense(1, "sigmoid")]).compile("bce")
    _spread(model.build(4, rng=[0, 1, 2]))
    result = gradcheck(model, X, y)
    assert result.ok and set(result.per_layer()) == {0, 1, 2}
    assert max(result.per_layer().values()) < 1e-7


def test_batchnorm_is_blind_to_a_shift_of_its_input():
    X, y = _data()
    model = Sequential([Dense(6, "linear"), BatchNorm("tanh"), Dense(1, "sigmoid")])
    model.compile("bce").build(4, rng=[0, 1])
    model.compute_gradients(X, y)
    grad_b = model.grads[0]["b"]
    assert np.max(np.abs(grad_b)) < 1e-14 < np.max(np.abs(model.grads[0]["W"]))


# --- against torch ----------------------------------------------------------------------------

TORCH_ACTS = ["linear", "tanh", "relu"]


def _torch_layer(torch, kind, layer, r):
    if kind is LayerNorm:
        module = torch.nn.LayerNorm(WIDTH, eps=layer.eps, dtype=torch.float64)
    else:
        module = torch.nn.BatchNorm1d(WIDTH, eps=layer.eps, momentum=layer.momentum,
                                      dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.params["gamma"][r, 0]))
        module.bias.copy_(torch.tensor(layer.params["beta"][r, 0]))
    return module


def _phi(torch, name):
    return {"linear": lambda t: t, "tanh": torch.tanh, "relu": torch.relu}[name]


@pytest.mark.parametrize("act", TORCH_ACTS)
@pytest.mark.parametrize("kind", NORMS)
def test_forward_and_backward_match_torch(kind, act):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.normal(0.7, 2.0, (R, N, WIDTH))
    upstream = rng.standard_normal((R, N, WIDTH))
    layer = _built(kind, activation=act)
    trace = layer.forward(x, training=True)
    grads = layer.backward(trace, upstream.copy())
    for r in range(R):
        module = _torch_layer(torch, kind, layer, r)
        xt = torch.tensor(x[r], requires_grad=True)
        out = _phi(torch, act)(module(xt))
        out.backward(torch.tensor(upstream[r]))
        np.testing.assert_allclose(trace.a[r], out.detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads.dx[r], xt.grad.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads.params["gamma"][r, 0], module.weight.grad.numpy(),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads.params["beta"][r, 0], module.bias.grad.numpy(),
                                   rtol=0, atol=1e-12)


def test_batchnorm_running_statistics_and_eval_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    layer = _built(BatchNorm, activation="relu", momentum=0.2)
    modules = [_torch_layer(torch, BatchNorm, layer, r) for r in range(R)]
    for n in (8, 5, 13, 2):  # batches of several sizes: the unbiased factor n / (n - 1) varies
        x = rng.normal(1.5, 3.0, (R, n, WIDTH))
        layer.forward(x, training=True)
        for r, module in enumerate(modules):
            module(torch.tensor(x[r]))
    for r, module in enumerate(modules):
        np.testing.assert_allclose(layer.buffers["running_mean"][r, 0],
                                   module.running_mean.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"][r, 0],
                                   module.running_var.numpy(), rtol=0, atol=1e-12)
    x = rng.normal(1.5, 3.0, (R, N, WIDTH))
    before = {k: v.copy() for k, v in layer.buffers.items()}
    out = layer.forward(x, training=False).a
    for r, module in enumerate(modules):
        module.eval()
        with torch.no_grad():
            expected = torch.relu(module(torch.tensor(x[r]))).numpy()
        np.testing.assert_allclose(out[r], expected, rtol=0, atol=1e-12)
    for k, v in layer.buffers.items():  # evaluation leaves the statistics alone
        np.testing.assert_array_equal(v, before[k])


# --- replicas ---------------------------------------------------------------------------------

def _norm_net():
    return Sequential([Dense(6, "linear", init="he_normal", use_bias=False), BatchNorm("relu"),
                       Dense(5, "tanh", init="he_normal"), LayerNorm("linear"),
                       Dense(1, "sigmoid")]).compile("bce", optimizer="adam")


def test_replicas_train_as_stand_alone_models():
    X, y = _data(n=30)
    seeds = [3, 4, 5]
    model = _norm_net().build(4, rng=[np.random.SeedSequence(s) for s in seeds])
    model.fit(X, y, epochs=4, batch_size=8, learning_rate=0.05, engine="numpy")
    for r, seed in enumerate(seeds):
        alone = _norm_net().build(4, rng=np.random.SeedSequence(seed))
        alone.fit(X, y, epochs=4, batch_size=8, learning_rate=0.05, engine="numpy")
        for batched, single in zip(model.layers, alone.layers, strict=True):
            for key in (*batched.params, *batched.buffers):
                got = {**batched.params, **batched.buffers}[key][r]
                want = {**single.params, **single.buffers}[key][0]
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=key)
        np.testing.assert_allclose(model.predict(X)[r], alone.predict(X), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", NORMS)
def test_init_replica_draws_nothing(kind):
    layer = kind()
    layer.build(WIDTH, 2, np.dtype(np.float64))
    layer.params["gamma"][...] = 3.0
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    layer.init_replica(1, rng)
    assert rng.bit_generator.state == state
    np.testing.assert_array_equal(layer.params["gamma"][:, 0, 0], [3.0, 1.0])
    np.testing.assert_array_equal(layer.params["beta"], 0.0)


@pytest.mark.parametrize("kind", NORMS)
def test_shared_input_is_every_replicas_input(kind):
    rng = np.random.default_rng(8)
    x, upstream = rng.standard_normal((N, WIDTH)), rng.standard_normal((R, N, WIDTH))
    layer = _built(kind, activation="tanh")
    shared = layer.forward(x, training=True)
    each = layer.forward(np.broadcast_to(x, (R, N, WIDTH)), training=True)
    np.testing.assert_allclose(shared.a, each.a, rtol=0, atol=1e-15)
    g_shared = layer.backward(shared, upstream.copy())
    g_each = layer.backward(each, upstream.copy())
    np.testing.assert_allclose(g_shared.dx, g_each.dx, rtol=0, atol=1e-14)
    for key in layer.params:
        np.testing.assert_allclose(g_shared.params[key], g_each.params[key], rtol=0, atol=1e-13)


# --- they normalize ---------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [1e-12, 1e-5])
@pytest.mark.parametrize("kind,axis", [(LayerNorm, -1), (BatchNorm, -2)])
def test_output_is_standardized(kind, axis, eps):
    rng = np.random.default_rng(9)
    x = rng.normal(5.0, 3.0, (R, 40, WIDTH)) * rng.uniform(0.1, 10, (R, 1, WIDTH))
    layer = kind(eps=eps)
    layer.build(WIDTH, R, np.dtype(np.float64))
    z = layer.forward(x, training=True).z
    # var(xhat) = var / (var + eps): 1 to 1e-8 with a tiny eps, a hair below it with PyTorch's
    var = x.var(axis=axis, keepdims=True)
    np.testing.assert_allclose(z.mean(axis=axis), 0.0, rtol=0, atol=1e-8)
    np.testing.assert_allclose(z.std(axis=axis, keepdims=True), np.sqrt(var / (var + eps)),
                               rtol=0, atol=1e-8)
    if eps < 1e-10:
        np.testing.assert_allclose(z.std(axis=axis), 1.0, rtol=0, atol=1e-8)


def test_float32_stays_float32():
    X, y = _data()
    model = _norm_net().build(4, rng=[0, 1], dtype=np.float32)
    model.fit(X, y, epochs=2, batch_size=10, engine="numpy")
    assert model.predict(X).dtype == np.float32
    assert all(v.dtype == np.float32 for layer in model.layers for v in layer.buffers.values())


# --- the layer's face -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NORMS)
def test_repr_width_and_keys(kind):
    layer = kind("relu")
    assert isinstance(layer, Layer)  # before build too: Sequential.add checks it
    assert repr(layer) == f"{kind.__name__}(?, relu)" and layer.units == 0
    layer.build(16, 2, np.dtype(np.float64))
    assert repr(layer) == f"{kind.__name__}(16, relu)" and layer.units == layer.fan_in == 16
    assert layer.weight_key is None and layer.bias_key is None and layer.inits == []
    assert set(layer.params) == {"gamma", "beta"}
    assert layer.unit_params() is None
    assert set(layer.buffers) == ({"running_mean", "running_var"} if kind is BatchNorm else set())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(eps=0.0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match="activation|relux"):
        BatchNorm("relux")
    layer = _built(BatchNorm)
    with pytest.raises(ValueError, match="at least 2 samples"):
        layer.forward(np.ones((R, 1, WIDTH)), training=True)
    layer.forward(np.ones((R, 1, WIDTH)), training=False)  # evaluation of one sample is fine


def test_a_residual_branch_may_end_in_a_norm_layer():
    model = Sequential([Residual([Dense(4, "relu"), Dense(4), LayerNorm()]), Dense(1)])
    model.compile("mse").build(4, rng=0, replicas=2)
    X = np.random.default_rng(0).standard_normal((10, 4))
    assert model.predict(X).shape == (2, 10, 1)
    assert gradcheck(model, X, X[:, :1]).ok


def test_measuring_passes_leave_the_running_statistics_alone():
    X = np.random.default_rng(3).standard_normal((12, 3))
    y = (X[:, 0] > 0).astype(float)

    def model():
        return Sequential([Dense(5, use_bias=False, init="he_normal"), BatchNorm("tanh"),
                           Dense(1, "sigmoid")]).compile("binary_crossentropy").build(3, rng=0)

    checked, stepped = model(), model()
    gradcheck(checked, X, y)  # one real pass, then hundreds of perturbed ones
    stepped.compute_gradients(X, y)  # one real pass
    for key, value in checked.layers[1].buffers.items():
        np.testing.assert_array_equal(value, stepped.layers[1].buffers[key])
        assert not np.array_equal(value, model().layers[1].buffers[key])  # the pass moved them
