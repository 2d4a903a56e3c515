"""PyTorch's torch.nn.init as the oracle for initlab.initializers (float64 on both sides).

PyTorch stores a Linear weight as (out, in) and a conv kernel as (out, in, *k); initlab stores
(in, out) and (*k, in, out). ``to_initlab`` moves a torch tensor into initlab's layout, so the
two libraries are compared element for element on the same weight.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
from torch.nn import init as tinit  # noqa: E402

from initlab import initializers  # noqa: E402
from initlab.fans import calculate_gain, compute_fans  # noqa: E402

P_MIN = 1e-4
SEED = 20240611
DENSE_T = (250, 400)          # torch (out, in): initlab (400, 250), 1e5 entries
CONV_T = (64, 32, 7, 7)       # torch (out, in, kh, kw): initlab (7, 7, 32, 64), 100352 entries


def initlab_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    out, inp, *kernel = torch_shape
    return (*kernel, inp, out)


def to_initlab(t) -> np.ndarray:
    """(out, in, *k) -> (*k, in, out); a 1-D bias is unchanged."""
    a = t.detach().numpy()
    return a if a.ndim == 1 else a.transpose(*range(2, a.ndim), 1, 0).copy()


def torch_draw(fn, torch_shape, seed=SEED, **kwargs) -> np.ndarray:
    """``fn`` applied to a float64 tensor of torch_shape, from torch.manual_seed(seed), in
    initlab's layout. The global torch RNG is restored afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        t = torch.empty(torch_shape, dtype=torch.float64)
        fn(t, **kwargs)
    return to_initlab(t)


def ks2_p(a: np.ndarray, b: np.ndarray) -> float:
    return stats.ks_2samp(np.ravel(a), np.ravel(b), method="asymp").pvalue


# --- fans ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("torch_shape", [DENSE_T, (3, 7), CONV_T, (32, 16, 3, 3), (32, 16, 5),
                                         (8, 4, 2, 3, 3)],
                         ids=["dense", "dense-small", "conv2d", "conv2d-3x3", "conv1d",
                              "conv3d"])
def test_fans_agree_after_transposing_the_layout(torch_shape):
    torch_fans = tinit._calculate_fan_in_and_fan_out(torch.empty(torch_shape))
    assert compute_fans(initlab_shape(torch_shape)) == torch_fans


# --- same distribution: two-sample KS -----------------------------------------------------------

# (torch function, its kwargs, initlab name, its params, torch shape)
PAIRS = [
    (tinit.uniform_, {"a": -0.3, "b": 0.7}, "uniform", {"low": -0.3, "high": 0.7}, DENSE_T),
    (tinit.normal_, {"mean": 0.2, "std": 0.5}, "normal", {"mean": 0.2, "std": 0.5}, DENSE_T),
    (tinit.trunc_normal_, {}, "trunc_normal_abs", {}, DENSE_T),
    (tinit.trunc_normal_, {"mean": 0.1, "std": 0.8, "a": -1.0, "b": 1.5}, "trunc_normal_abs",
     {"mean": 0.1, "std": 0.8, "a": -1.0, "b": 1.5}, DENSE_T),
    (tinit.xavier_uniform_, {}, "glorot_uniform", {}, DENSE_T),
    (tinit.xavier_uniform_, {"gain": 2.0}, "glorot_uniform", {"gain": 2.0}, CONV_T),
    (tinit.xavier_normal_, {}, "glorot_normal", {}, DENSE_T),
    (tinit.xavier_normal_, {"gain": 2.0}, "glorot_normal", {"gain": 2.0}, CONV_T),
    (tinit.kaiming_uniform_, {}, "he_uniform", {}, DENSE_T),  # both defaults: a=0, gain sqrt 2
    (tinit.kaiming_normal_, {}, "he_normal", {}, DENSE_T),
    (tinit.kaiming_normal_, {}, "he_normal", {}, CONV_T),
]
KAIMING = [  # (mode, nonlinearity, a)
    ("fan_in", "relu", 0.0),
    ("fan_out", "relu", 0.0),
    ("fan_in", "leaky_relu", 0.2),
    ("fan_out", "leaky_relu", 0.2),
    ("fan_in", "leaky_relu", 0.0),
    ("fan_in", "tanh", 0.0),
    ("fan_out", "linear", 0.0),
]
for _mode, _nonlinearity, _a in KAIMING:
    _kw = {"mode": _mode, "nonlinearity": _nonlinearity, "a": _a}
    PAIRS.append((tinit.kaiming_normal_, _kw, "he_normal", _kw, DENSE_T))
    PAIRS.append((tinit.kaiming_uniform_, _kw, "he_uniform", _kw, DENSE_T))


def _pair_id(pair) -> str:
    fn, kwargs, _, _, shape = pair
    return fn.__name__ + "".join(f"-{k}={v}" for k, v in kwargs.items()) + f"-{shape}"


PAIR_PARAMS = [pytest.param(*p, id=_pair_id(p)) for p in PAIRS]


@pytest.mark.parametrize(("torch_fn", "torch_kwargs", "name", "params", "torch_shape"),
                         PAIR_PARAMS)
def test_same_distribution_as_torch(torch_fn, torch_kwargs, name, params, torch_shape):
    theirs = torch_draw(torch_fn, torch_shape, **torch_kwargs)
    ours = getattr(initializers, name)(initlab_shape(torch_shape), rng=SEED, **params)
    assert ours.shape == theirs.shape
    assert ks2_p(theirs, ours) > P_MIN
    assert np.std(ours) == pytest.approx(np.std(theirs), rel=0.03)


# --- same scale, exactly ------------------------------------------------------------------------

def fitted_scale(draw: np.ndarray, unit: np.ndarray) -> float:
    """The s with draw == s * unit, asserting that the draw is exactly that (to rounding)."""
    s = float(np.sum(draw * unit) / np.sum(unit * unit))
    np.testing.assert_allclose(draw, s * unit, rtol=0, atol=1e-12 * abs(s))
    return s


def torch_scale(torch_fn, torch_shape, family, **kwargs) -> float:
    unit_fn, unit_kw = ((tinit.normal_, {"mean": 0.0, "std": 1.0}) if family == "normal"
                        else (tinit.uniform_, {"a": -1.0, "b": 1.0}))
    return fitted_scale(torch_draw(torch_fn, torch_shape, **kwargs),
                        torch_draw(unit_fn, torch_shape, **unit_kw))


def initlab_scale(name, shape, family, **params) -> float:
    unit = (initializers.normal(shape, rng=SEED) if family == "normal"
            else initializers.uniform(shape, low=-1.0, high=1.0, rng=SEED))
    return fitted_scale(getattr(initializers, name)(shape, rng=SEED, **params), unit)


SCALE_PAIRS = [p for p in PAIRS if p[0] not in (tinit.uniform_, tinit.normal_,
                                                 tinit.trunc_normal_)]


@pytest.mark.parametrize(("torch_fn", "torch_kwargs", "name", "params", "torch_shape"),
                         [pytest.param(*p, id=_pair_id(p)) for p in SCALE_PAIRS])
def test_same_std_or_bound_as_torch_exactly(torch_fn, torch_kwargs, name, params, torch_shape):
    family = "uniform" if name.endswith("uniform") else "normal"
    theirs = torch_scale(torch_fn, torch_shape, family, **torch_kwargs)
    ours = initlab_scale(name, initlab_shape(torch_shape), family, **params)
    assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize(("torch_fn", "name", "family"), [
    (tinit.kaiming_normal_, "he_normal", "normal"),
    (tinit.kaiming_uniform_, "he_uniform", "uniform"),
])
def test_kaiming_slope_with_default_nonlinearity(torch_fn, name, family):
    theirs = torch_scale(torch_fn, DENSE_T, family, a=0.2)
    assert theirs == pytest.approx(math.sqrt(2 / 1.04) / math.sqrt(400)
                                   * (math.sqrt(3) if family == "uniform" else 1), rel=1e-12)
    assert initlab_scale(name, initlab_shape(DENSE_T), family, a=0.2) == pytest.approx(
        theirs, rel=1e-12)


# --- negative controls --------------------------------------------------------------------------

def test_negative_control_xavier_normal_is_not_he_normal():
    # (in, out) = (400, 250): xavier std sqrt(2 / 650) = 0.055, he std sqrt(2 / 400) = 0.071
    theirs = torch_draw(tinit.xavier_normal_, DENSE_T)
    assert ks2_p(theirs, initializers.he_normal(initlab_shape(DENSE_T), rng=SEED)) < P_MIN


def test_negative_control_layout_matters():
    # kaiming_normal_ on torch (250, 400) has fan_in 400; initlab's he_normal on the
    # untransposed (250, 400) would read fan_in 250
    theirs = torch_draw(tinit.kaiming_normal_, DENSE_T)
    assert ks2_p(theirs, initializers.he_normal(DENSE_T, rng=SEED)) < P_MIN
    assert ks2_p(theirs, initializers.he_normal(initlab_shape(DENSE_T), rng=SEED)) > P_MIN


def test_negative_control_trunc_normal_is_not_the_corrected_truncation():
    # PyTorch's trunc_normal_(std=1) has std 0.88; initlab's truncated_normal has exactly 1
    theirs = torch_draw(tinit.trunc_normal_, DENSE_T)
    ours = initializers.truncated_normal(initlab_shape(DENSE_T), rng=SEED)
    assert ks2_p(theirs, ours) < P_MIN


# --- constants ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("torch_fn", "torch_kwargs", "name", "params"), [
    (tinit.constant_, {"val": 0.37}, "constant", {"value": 0.37}),
    (tinit.ones_, {}, "ones", {}),
    (tinit.zeros_, {}, "zeros", {}),
    (tinit.eye_, {}, "identity", {}),
])
@pytest.mark.parametrize("torch_shape", [(3, 5), (5, 3), (4, 4)])
def test_constants_equal_torch(torch_fn, torch_kwargs, name, params, torch_shape):
    theirs = torch_draw(torch_fn, torch_shape, **torch_kwargs)
    ours = getattr(initializers, name)(initlab_shape(torch_shape), **params)
    np.testing.assert_array_equal(ours, theirs)


# --- PyTorch's layer defaults: torch_default ----------------------------------------------------

def _layer(cls, *args):
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return cls(*args, dtype=torch.float64)


@pytest.mark.parametrize(("layer", "fan_in"), [
    (lambda: _layer(torch.nn.Linear, 400, 250), 400),
    (lambda: _layer(torch.nn.Conv2d, 32, 64, 7), 32 * 7 * 7),
], ids=["linear", "conv2d"])
def test_layer_default_weight(layer, fan_in):
    weight = to_initlab(layer().weight)
    assert compute_fans(weight.shape)[0] == fan_in
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): sqrt(3) * sqrt(2/6) / sqrt(fan_in)
    assert np.all(np.abs(weight) <= bound)
    ours = initializers.torch_default(weight.shape, rng=SEED)
    assert np.all(np.abs(ours) <= bound)
    assert ks2_p(weight, ours) > P_MIN


@pytest.mark.parametrize(("layer", "fan_in"), [
    (lambda: _layer(torch.nn.Linear, 16, 20000), 16),
    (lambda: _layer(torch.nn.Conv2d, 2, 20000, 3), 2 * 3 * 3),
], ids=["linear", "conv2d"])
def test_layer_default_bias(layer, fan_in):
    bias = layer().bias.detach().numpy()
    bound = 1 / math.sqrt(fan_in)
    assert np.all(np.abs(bias) <= bound) and np.abs(bias).max() > 0.99 * bound
    ours = initializers.torch_default(bias.shape, fan_in=fan_in, rng=SEED)
    assert ks2_p(bias, ours) > P_MIN
    # negative control: a bias drawn with the wrong fan_in (2x) must be told apart
    assert ks2_p(bias, initializers.torch_default(bias.shape, fan_in=2 * fan_in, rng=SEED)) < P_MIN


# --- orthogonal ---------------------------------------------------------------------------------

@pytest.fixture
def one_torch_thread():
    # these QRs are too small to gain from threads, and on a busy machine OpenMP's waiting
    # threads make each torch.linalg.qr call cost ~10 ms instead of ~0.1 ms
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_semi_orthogonal(w: np.ndarray, gain: float) -> None:
    m = w.reshape(-1, w.shape[-1])  # initlab layout: rows = everything but the output axis
    rows, cols = m.shape
    if rows >= cols:
        np.testing.assert_allclose(m.T @ m, gain**2 * np.eye(cols), rtol=0, atol=1e-10)
    else:
        np.testing.assert_allclose(m @ m.T, gain**2 * np.eye(rows), rtol=0, atol=1e-10)


@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("torch_shape", [(64, 128), (128, 64), (16, 8, 3, 3)],
                         ids=["out<in", "out>in", "conv"])
def test_orthogonal_identity_in_both_layouts(torch_shape, gain, one_torch_thread):
    theirs = torch_draw(tinit.orthogonal_, torch_shape, gain=gain)
    ours = initializers.orthogonal(initlab_shape(torch_shape), gain=gain, rng=SEED)
    assert theirs.shape == ours.shape
    assert_semi_orthogonal(theirs, gain)
    assert_semi_orthogonal(ours, gain)


def test_orthogonal_same_distribution_as_torch(one_torch_thread):
    n = 1500
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        theirs = np.stack([to_initlab(tinit.orthogonal_(torch.empty(4, 4, dtype=torch.float64)))
                           for _ in range(n)])
    rng = np.random.default_rng(SEED)
    ours = np.stack([initializers.orthogonal((4, 4), rng=rng) for _ in range(n)])
    for i, j in [(0, 0), (1, 2)]:
        assert ks2_p(theirs[:, i, j], ours[:, i, j]) > P_MIN
    # negative control: QR without the sign fix has Q[0, 0] < 0 always
    raw = np.stack([np.linalg.qr(rng.standard_normal((4, 4)))[0] for _ in range(n)])
    assert ks2_p(theirs[:, 0, 0], raw[:, 0, 0]) < P_MIN


# --- sparse -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sparsity", "zeros_per_input"), [(0.3, 75), (0.9, 225), (0.5, 125)])
def test_sparse_zero_pattern_and_values_match_torch(sparsity, zeros_per_input):
    std = 0.05
    theirs = torch_draw(tinit.sparse_, DENSE_T, sparsity=sparsity, std=std)  # now (in, out)
    ours = initializers.sparse(initlab_shape(DENSE_T), sparsity=sparsity, std=std, rng=SEED)
    assert zeros_per_input == math.ceil(sparsity * DENSE_T[0])  # ceil(sparsity * out)
    # torch zeroes per column of its (out, in) weight == per row of initlab's (in, out)
    np.testing.assert_array_equal((theirs == 0).sum(axis=1), (ours == 0).sum(axis=1))
    np.testing.assert_array_equal((ours == 0).sum(axis=1), zeros_per_input)
    assert ks2_p(theirs[theirs != 0], ours[ours != 0]) > P_MIN


# --- gains --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("nonlinearity", "param"), [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0), ("selu", None),
])
def test_calculate_gain_agrees_with_torch(nonlinearity, param):
    assert calculate_gain(nonlinearity, param) == pytest.approx(
        tinit.calculate_gain(nonlinearity, param), rel=1e-15)


@pytest.mark.parametrize("nonlinearity", ["conv_transpose1d", "conv_transpose2d",
                                          "conv_transpose3d"])
def test_calculate_gain_of_transposed_convs_agrees_with_torch(nonlinearity):
    assert calculate_gain(nonlinearity) == tinit.calculate_gain(nonlinearity) == 1


# --- dirac --------------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize(("conv", "c_in", "c_out", "kernel"), [
    (torch.nn.Conv1d, 4, 4, 3), (torch.nn.Conv1d, 4, 6, 4), (torch.nn.Conv2d, 6, 4, (3, 5)),
    (torch.nn.Conv2d, 4, 4, 3), (torch.nn.Conv3d, 4, 8, (3, 2, 3)), (torch.nn.Conv3d, 2, 2, 1),
])
def test_dirac_is_torch_dirac(conv, c_in, c_out, kernel, groups):
    from initlab import torch as itorch

    layer = conv(c_in, c_out, kernel, groups=groups).double()
    assert layer.weight.dim() in (3, 4, 5)
    theirs = tinit.dirac_(layer.weight.detach().clone(), groups=groups)
    itorch.initialize(layer, {"name": "dirac", "groups": groups})
    torch.testing.assert_close(layer.weight.detach(), theirs, rtol=0, atol=0)
    assert theirs.sum() > 0  # a non-trivial kernel: the comparison can fail
    if c_in == c_out and all(k % 2 for k in np.atleast_1d(kernel)):
        same = conv(c_in, c_out, kernel, groups=groups, padding="same").double()
        itorch.initialize(same, {"name": "dirac", "groups": groups})
        x = torch.randn(2, c_in, *([7] * (layer.weight.dim() - 2)), dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(same(x), x, rtol=0, atol=0)  # the identity map


def test_dirac_negative_control_group_layout_matters():
    theirs = tinit.dirac_(torch.empty(4, 2, 3, dtype=torch.float64), groups=2)
    ours = initializers.dirac(initlab_shape((4, 2, 3)), groups=1)  # groups ignored: wrong
    assert not np.array_equal(to_initlab(theirs), ours)
