"""The compiled kernels against the NumPy engine: same weights, state and costs in float64 to
1e-10, the same distribution of outcomes from chaotic starts, and the configurations they
refuse."""

from __future__ import annotations

import copy
import inspect

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from initlab.nn import SGD, Adam, Dense, Sequential, activations, kernels, losses
from initlab.nn.kernels import ops

# the reference engine: fit(engine="numpy") where fit can choose (it may pick the kernels)
NUMPY = {"engine": "numpy"} if "engine" in inspect.signature(Sequential.fit).parameters else {}
HIDDEN = ["linear", "sigmoid", "tanh", "relu", {"name": "leaky_relu", "slope": 0.1},
          {"name": "elu", "alpha": 0.7}, "selu", "gelu", "silu", "softplus"]
# (loss, output activation, output widths)
LOSS_OUTPUTS = [
    ("binary_crossentropy", "sigmoid", [1]),
    ("binary_crossentropy", "linear", [1, 2]),
    ({"name": "clipped_binary_crossentropy", "eps": 1e-7}, "sigmoid", [1, 2]),
    ("softmax_crossentropy", "softmax", [2, 3, 4]),
    ("softmax_crossentropy", "linear", [3]),
    ("mean_squared_error", "linear", [1, 3]),
    ("mean_squared_error", "tanh", [2]),
    ("mean_squared_error", "softmax", [3]),
    ("mean_squared_error", "gelu", [1]),
]
OPTIMIZERS = {"sgd": lambda lr: SGD(lr), "momentum": lambda lr: SGD(lr, momentum=0.9),
              "nesterov": lambda lr: SGD(lr, momentum=0.8, nesterov=True),
              "adam": lambda lr: Adam(lr / 10)}


def _targets(loss, out_act, k, n, rng):
    """Labels, or regression targets inside the output's range (a tanh driven to +-1 makes
    1 - a^2 cancel, and then a rounding difference grows without bound)."""
    name = loss if isinstance(loss, str) else loss["name"]
    if "binary" in name:
        return rng.integers(0, 2, (n, k)).astype(float)
    if name == "softmax_crossentropy":
        return rng.integers(0, k, n)
    if out_act == "softmax":
        return rng.dirichlet(np.ones(k), n)
    return rng.uniform(-0.6, 0.6, (n, k)) if out_act == "tanh" else rng.standard_normal((n, k))


def _model(widths, hidden, out_act, loss, optimizer, d, R, *, bias, init="he_normal",
           dtype=np.float64, seed=0):
    layers = [Dense(w, hidden[i % len(hidden)], init=init, use_bias=bias[i],
                    bias_init={"name": "normal", "std": 0.1})
              for i, w in enumerate(widths[:-1])]
    layers.append(Dense(widths[-1], out_act, init=init, use_bias=bias[-1],
                        bias_init={"name": "normal", "std": 0.1}))
    return Sequential(layers).compile(loss, optimizer).build(
        d, rng=[seed + r for r in range(R)], dtype=dtype)


def _copies(model):
    return ([layer.params["W"].copy() for layer in model.layers],
            [layer.params["b"].copy() if "b" in layer.params else None
             for layer in model.layers])


def _orders(model, epochs, n):
    """Each replica's sample order per epoch, drawn as the engine draws them (its stream)."""
    gens = copy.deepcopy(model.rngs)
    return np.stack([np.stack([g.permutation(n) for g in gens]) for _ in range(epochs)])


def _close(got, ref, rtol):
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2 * scale)
    if not ref.size:
        return 0.0
    return float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-2 * scale)))


def _run_both(*, widths, hidden, loss_out, opt, lr, d, n, R, epochs, batch, shuffle, per_replica,
              bias, layout, dtype=np.float64, seed=0, split=None, perturb=0.0):
    """Train one model on the engine and a copy of it with the kernels; return both sides.
    With ``perturb``, only the engine's model, from weights moved by that much (relative)."""
    loss, out_act, _ = loss_out
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((R, n, d) if per_replica else (n, d))
    y = _targets(loss, out_act, widths[-1], n, rng)
    model = _model(widths, hidden, out_act, loss, OPTIMIZERS[opt](lr), d, R, bias=bias,
                   dtype=dtype, seed=seed)
    for p in model.parameters():
        p *= 1.0 + perturb * np.random.default_rng(seed + 1).choice([-1.0, 1.0], p.shape)
    W, B = _copies(model)
    shuffled = shuffle and batch is not None and batch < n
    orders = _orders(model, epochs, n) if shuffled else None
    model.fit(X, y, epochs=epochs, batch_size=batch, shuffle=shuffle, log_every=1, workers=1,
              **NUMPY)
    if perturb:
        return model
    optimizer = OPTIMIZERS[opt](lr)
    Xk = X.astype(dtype)
    yk = model.loss.targets(y, widths[-1]).astype(dtype)
    acts = [layer.activation for layer in model.layers]
    parts = [(0, epochs)] if split is None else [(0, split), (split, epochs)]
    costs = []
    for lo, hi in parts:  # a second call continues the optimizer's state
        costs.append(kernels.train(W, B, acts, model.loss, optimizer, Xk, yk, epochs=hi - lo,
                                   batch_size=batch, orders=None if orders is None else
                                   orders[lo:hi], log=np.ones(hi - lo, bool), layout=layout))
    return model, W, B, optimizer, np.concatenate(costs)


def _compare(model, W, B, optimizer, costs, rtol):
    worst = 0.0
    for layer, w, b in zip(model.layers, W, B, strict=True):
        worst = max(worst, _close(w, layer.params["W"], rtol))
        if b is not None:
            worst = max(worst, _close(b, layer.params["b"], rtol))
    worst = max(worst, _close(costs, np.array(model.history["cost"]), rtol))
    assert len(optimizer.state) == len(model.optimizer.state)
    for mine, ref in zip(optimizer.state, model.optimizer.state, strict=True):
        assert mine.keys() == ref.keys()
        for key in ref:
            assert np.asarray(mine[key]).shape == np.asarray(ref[key]).shape
            worst = max(worst, _close(mine[key], ref[key], rtol))
    return worst


@st.composite
def configs(draw):
    loss_out = draw(st.sampled_from(LOSS_OUTPUTS))
    depth = draw(st.integers(1, 4))
    n = draw(st.integers(1, 40))
    batch = draw(st.one_of(st.none(), st.integers(1, n + 2)))
    per_epoch = 1 if batch is None else -(-n // batch)
    return dict(
        widths=[draw(st.integers(1, 16)) for _ in range(depth - 1)]
        + [draw(st.sampled_from(loss_out[2]))],
        hidden=draw(st.lists(st.sampled_from(HIDDEN), min_size=1, max_size=3)),
        loss_out=loss_out, opt=draw(st.sampled_from(list(OPTIMIZERS))),
        lr=draw(st.floats(0.005, 0.05)), d=draw(st.integers(1, 5)), n=n,
        # at most ~150 updates: longer runs of a sensitive net amplify rounding past 1e-10
        R=draw(st.integers(1, 4)), epochs=draw(st.integers(1, max(1, min(30, 150 // per_epoch)))),
        batch=batch, shuffle=draw(st.booleans()),
        per_replica=draw(st.booleans()), bias=[draw(st.booleans()) for _ in range(depth)],
        layout=draw(st.sampled_from(["lanes", "gemm"])), seed=draw(st.integers(0, 1000)))



@pytest.mark.parametrize("batch,shuffle", [(None, False), (50, False), (50, True)])
@pytest.mark.parametrize("hidden", [["relu"], ["tanh", "sigmoid"], ["gelu"]])
def test_the_lanes_layout_in_several_chunks_matches_the_engine(monkeypatch, batch, shuffle,
                                                               hidden):
    """Chunks of one block (32 samples) over 70 samples: three chunks a full batch, 32 + 18
    samples in a batch of 50, a partial last chunk each time; in sample order or shuffled, and
    hidden layers that keep a alone (relu, tanh, sigmoid) or z and a (gelu)."""
    monkeypatch.setattr(kernels, "CHUNK", ops.BLOCK)
    got = _run_both(widths=[7, 5, 3], hidden=hidden, loss_out=LOSS_OUTPUTS[3], opt="momentum",
                    lr=0.02, d=3, n=70, R=2, epochs=6, batch=batch, shuffle=shuffle,
                    per_replica=True, bias=[True, False, True], layout="lanes")
    assert _compare(*got, rtol=1e-10) <= 1e-10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_kernels_match_the_engine_in_float64(config):
    got = _run_both(**config)
    reference_costs = np.array(got[0].history["cost"])
    # runs that diverge (overflow to inf and nan), or amplify a change of the start by more than
    # 1e4 (so that rounding alone, 1e-16 a step, could reach 1e-10), cannot agree to 1e-10
    assume(np.all(np.isfinite(reference_costs)) and reference_costs.max() < 1e6)
    assume(_amplification(config, got[0]) < 1e4)
    _compare(*got, rtol=1e-10)


def _amplification(config, model, perturb=1e-12):
    """How much the engine's end state moves, relative, per relative change of the start."""
    moved = _run_both(**config, perturb=perturb)
    change = 0.0
    for a, b in zip(moved.parameters(), model.parameters(), strict=True):
        change = max(change, float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b)))))
    return change / perturb


@pytest.mark.parametrize("layout", ["lanes", "gemm"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_two_calls_continue_the_optimizer_state(layout, opt):
    got = _run_both(widths=[7, 5, 1], hidden=["tanh", "relu"], loss_out=LOSS_OUTPUTS[0],
                    opt=opt, lr=0.05, d=3, n=37, R=3, epochs=12, batch=8, shuffle=True,
                    per_replica=False, bias=[True, False, True], layout=layout, split=5)
    _compare(*got, rtol=1e-10)


def test_a_numpy_fit_continues_where_the_kernels_stopped():
    X = np.random.default_rng(1).standard_normal((50, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)

    def net():
        return _model([8, 1], ["tanh"], "sigmoid", "binary_crossentropy", Adam(0.01), 2, 2,
                      bias=[True, True])
    ref = net().fit(X, y, epochs=20, log_every=0, workers=1, **NUMPY)
    model = net().fit(X, y, epochs=0, log_every=0, workers=1, **NUMPY)  # sets its optimizer
    assert model.optimizer.state == []
    kernels.train([layer.params["W"] for layer in model.layers],
                  [layer.params["b"] for layer in model.layers],
                  [layer.activation for layer in model.layers], model.loss, model.optimizer,
                  X, y[:, None], epochs=8)
    t = model.optimizer.state[0]["t"]
    assert t.shape == () and t.dtype == np.float64 and float(t) == 8.0
    model.fit(X, y, epochs=12, log_every=0, workers=1, **NUMPY)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_plain_sgd_leaves_the_engines_empty_state_entries():
    opt = SGD(0.1)
    W, B = [np.full((1, 2, 1), 0.5)], [np.zeros((1, 1, 1))]
    kernels.train(W, B, [activations.get("sigmoid")], losses.get("binary_crossentropy"), opt,
                  np.ones((3, 2)), np.ones((3, 1)), epochs=2)
    assert opt.state == [{}, {}]


def test_views_are_updated_in_place():
    model = _model([6, 1], ["relu"], "sigmoid", "binary_crossentropy", SGD(0.1), 3, 2,
                   bias=[True, True])
    X = np.random.default_rng(2).standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(float)[:, None]
    acts = [layer.activation for layer in model.layers]
    W, B = _copies(model)
    views = [np.asfortranarray(w)[:, :, :] for w in W]  # not C-contiguous
    assert not views[0].flags.c_contiguous
    kernels.train(W, B, acts, model.loss, SGD(0.1), X, y, epochs=3)
    _, B2 = _copies(model)
    kernels.train(views, B2, acts, model.loss, SGD(0.1), X, y, epochs=3)
    for a, b in zip(views + B2, W + B, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(W[0], model.layers[0].params["W"])


def test_the_two_layouts_agree_on_a_wide_network():
    rng = np.random.default_rng(3)
    model = _model([64, 64, 10], ["tanh", "gelu"], "linear", "softmax_crossentropy",
                   SGD(0.05, momentum=0.9), 20, 2, bias=[True, True, True])
    X = rng.standard_normal((300, 20))
    y = model.loss.targets(rng.integers(0, 10, 300), 10)
    out = {}
    for layout in ("lanes", "gemm"):
        W, B = _copies(model)
        c = kernels.train(W, B, [layer.activation for layer in model.layers], model.loss,
                          SGD(0.05, momentum=0.9), X, y, epochs=5, batch_size=64,
                          log=np.ones(5, bool), layout=layout)
        out[layout] = (W, c)
    for a, b in zip(out["lanes"][0], out["gemm"][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(out["lanes"][1], out["gemm"][1], rtol=1e-12)


@pytest.mark.parametrize("layout", ["lanes", "gemm"])
@pytest.mark.parametrize("loss_out", [LOSS_OUTPUTS[0], LOSS_OUTPUTS[3], LOSS_OUTPUTS[6]])
def test_float32_computes_in_float32_close_to_the_engine(layout, loss_out):
    model, W, B, opt, costs = _run_both(
        widths=[9, 6, loss_out[2][0]], hidden=["tanh", "silu"], loss_out=loss_out, opt="adam",
        lr=0.05, d=4, n=33, R=2, epochs=10, batch=8, shuffle=True, per_replica=True,
        bias=[True, True, True], layout=layout, dtype=np.float32)
    assert all(w.dtype == np.float32 for w in W) and opt.state[0]["m"].dtype == np.float32
    _compare(model, W, B, opt, costs, rtol=2e-4)


def _final_costs(train_with_kernels, lr, seeds, epochs=150):
    """Final training costs of tanh nets drawn N(0, 1) x 10 (chaotic under SGD), one a seed."""
    X = np.random.default_rng(0).standard_normal((64, 2))
    y = (np.sin(3 * X[:, 0]) > X[:, 1]).astype(float)
    model = Sequential([Dense(16, "tanh", init={"name": "scaled_normal", "scale": 10.0}),
                        Dense(1, "sigmoid", init={"name": "scaled_normal", "scale": 10.0})])
    model.compile("binary_crossentropy", SGD(lr)).build(2, rng=list(seeds))
    if train_with_kernels:
        W, B = _copies(model)
        kernels.train(W, B, [layer.activation for layer in model.layers], model.loss, SGD(lr),
                      X, y[:, None], epochs=epochs, batch_size=8)
        for layer, w, b in zip(model.layers, W, B, strict=True):
            layer.params["W"][...], layer.params["b"][...] = w, b
    else:
        model.fit(X, y, epochs=epochs, batch_size=8, shuffle=False, log_every=0, workers=1,
                  **NUMPY)
    return np.asarray(model.evaluate(X, y)["loss"])


def test_chaotic_starts_give_the_engines_distribution_of_outcomes():
    seeds = range(100, 124)
    engine = _final_costs(False, 0.5, seeds)
    mine = _final_costs(True, 0.5, seeds)
    # bit for bit they part ways (chaos); as a sample over seeds they are the same
    assert stats.ks_2samp(engine, mine).pvalue > 1e-3
    assert abs(np.median(engine) - np.median(mine)) < 0.25 * np.median(engine) + 1e-3
    # negative control: the same test tells apart a 10x smaller learning rate
    slow = _final_costs(True, 0.05, seeds)
    assert stats.ks_2samp(engine, slow).pvalue < 1e-3


class Swish2(activations.Activation):
    name = "swish2"

    def forward(self, z):
        return z * activations.special.expit(2 * z)

    def backward(self, z, a, da):
        return da


class ReLUTwin(activations.ReLU):
    """Named relu, but a different class: the kernels must not assume its arithmetic."""


@pytest.mark.parametrize("acts, loss, opt, dtype, word", [
    (["relu", Swish2()], "mean_squared_error", SGD(0.1), np.float64, "swish2"),
    ([ReLUTwin(), "sigmoid"], "binary_crossentropy", SGD(0.1), np.float64, "layer 0"),
    (["softmax", "sigmoid"], "binary_crossentropy", SGD(0.1), np.float64, "softmax"),
    (["relu", "tanh"], "binary_crossentropy", SGD(0.1), np.float64, "logits"),
    (["relu", "sigmoid"], "binary_crossentropy", SGD(0.1), np.float16, "float16"),
    (["relu", "sigmoid"], "binary_crossentropy", object(), np.float64, "optimizer"),
])
def test_supported_names_what_it_cannot_compile(acts, loss, opt, dtype, word):
    reason = kernels.supported([activations.get(a) for a in acts], losses.get(loss), opt, dtype)
    assert isinstance(reason, str) and word in reason
    with pytest.raises(ValueError, match="cannot run"):
        kernels.train([np.zeros((1, 2, 3), dtype), np.zeros((1, 3, 1), dtype)], [None, None],
                      [activations.get(a) for a in acts], losses.get(loss), opt,
                      np.zeros((4, 2)), np.zeros((4, 1)), epochs=1)


def test_supported_accepts_every_activation_loss_and_optimizer():
    for hidden in HIDDEN:
        for loss, out_act, _ in LOSS_OUTPUTS:
            for opt in OPTIMIZERS.values():
                for dtype in (np.float32, np.float64):
                    assert kernels.supported([activations.get(hidden), activations.get(out_act)],
                                             losses.get(loss), opt(0.1), dtype) is None


def test_train_checks_its_arguments():
    args = ([np.zeros((2, 3, 1))], [None], [activations.get("sigmoid")],
            losses.get("binary_crossentropy"), SGD(0.1), np.zeros((5, 3)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="orders"):
        kernels.train(*args, epochs=2, batch_size=2, orders=np.zeros((2, 2, 4), int))
    with pytest.raises(ValueError, match="X must be"):
        kernels.train(*args[:5], np.zeros((5, 4)), args[6], epochs=1)
    with pytest.raises(ValueError, match="log"):
        kernels.train(*args, epochs=2, log=np.ones(3, bool))
    with pytest.raises(ValueError, match="layout"):
        kernels.train(*args, epochs=1, layout="blas")
    with pytest.raises(ValueError, match=r"1 \.\.\. 3 .*last_steps=4"):  # 5 samples, batches of 2
        kernels.train(*args, epochs=1, batch_size=2, last_steps=4)
    with pytest.raises(ValueError, match="last_steps=0"):
        kernels.train(*args, epochs=1, last_steps=0)
    assert kernels.train(*args, epochs=0).shape == (0, 2)


def test_default_threads_sets_the_threads_train_uses_when_not_told(monkeypatch):
    seen = []
    monkeypatch.setattr(kernels, "_run", lambda workers, count, job: seen.append(workers))
    args = ([np.zeros((4, 3, 1))], [None], [activations.get("sigmoid")],
            losses.get("binary_crossentropy"), SGD(0.1), np.zeros((5, 3)), np.zeros((5, 1)))
    monkeypatch.setattr(kernels, "_THREADS", None)
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    kernels.train(*args, epochs=1)
    kernels.default_threads(1)
    kernels.train(*args, epochs=1)
    kernels.train(*args, epochs=1, threads=2)  # told: the default does not apply
    kernels.default_threads(None)
    kernels.train(*args, epochs=1)
    assert seen == [3, 1, 2, 3]
    with pytest.raises(ValueError, match="threads=0"):
        kernels.default_threads(0)


@numba.njit
def _vector_math(x, t, s, half):
    for i in range(0, x.shape[0], kernels._VW):
        v = kernels._vload(x, i)
        kernels._vstore(t, i, kernels._vtanh(v))
        kernels._vstore(s, i, kernels._vexpit(v))
        kernels._vstore(half, i, kernels._vexpit(kernels._vfill(v, 0.0)))


def _ulps(got, ref):
    """|got - ref| in units in the last place of ref; 0 where both are the same (nan too)."""
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    err = np.abs(got - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))
    return np.where(same, 0.0, err)


def test_vector_tanh_and_sigmoid_stay_within_a_few_ulp_of_numpy():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(40000) * 4, rng.standard_normal(4000) * 1e-6,
                        rng.uniform(-700, 700, 4000), [0.0, -0.0, np.inf, -np.inf, np.nan,
                                                       20.0, -20.0, 1e-310, 0.35, -1.04]])
    x = x[: len(x) // kernels._VW * kernels._VW]
    t, s, half = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    _vector_math(x, t, s, half)
    assert np.all(half == 0.5)
    with np.errstate(over="ignore"):
        expit = 1.0 / (1.0 + np.exp(-x))
    assert _ulps(t, np.tanh(x)).max() <= 3
    assert _ulps(s, expit).max() <= 2
    # negative control: the check sees a tanh 4e-16 (relative) off
    assert _ulps(np.tanh(x) * (1 + 4e-16), np.tanh(x)).max() > 3


def test_warm_up_reports_progress_and_time():
    calls = []
    seconds = kernels.warm_up(np.float64, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)] and seconds >= 0.0
    calls.clear()
    kernels.warm_up(np.float64, progress=lambda done, total: calls.append((done, total)),
                    normalization=True)
    assert calls == [(1, 2), (2, 2)]


_LINK_PROBE = r"""
import re
from numba.core import event
from initlab.nn import kernels
from initlab.nn.kernels import ops, replica
compiled = set()
class Modules(event.Listener):
    def on_start(self, ev):
        compiled.add(ev.data["dispatcher"].py_func.__module__)
    def on_end(self, ev):
        pass
with event.install_listener("numba:compile", Modules()):
    kernels.warm_up(normalization=True)
ir = replica.train_replica.inspect_llvm(replica.train_replica.signatures[0])  # Dense layers'
calls = set(re.findall(r'call [^@]*@"?([A-Za-z0-9_$.]+)', ir))
print(all(any(f"3ops{len(name)}{name}B" in c for c in calls)
          for name in ("mix", "grad_w", "act_forward", "act_backward", "loss", "update")),
      any("_expit" in c or "_softplus" in c or "_ndtr" in c for c in calls),
      type(ops.mix.overloads[ops.mix.signatures[0]].library).__name__, *sorted(compiled))
"""


def test_per_op_kernels_are_called_out_of_line_and_scalar_ones_inlined(tmp_path):
    """Compiled from an empty numba cache: the replica kernel calls the per-op kernels (kept
    out of line, so LLVM optimizes and emits one copy of each) and has the per-element scalar
    functions inlined; an op's own library is only linked in (no machine code of its own).
    And numba compiles initlab's functions alone: none of its own overloads (``min``, ``max``,
    ``shape[k]``), each of which it compiles with its full pipeline (30-40 ms apiece)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LINK_PROBE], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ,
                                          "NUMBA_CACHE_DIR": str(tmp_path)}).stdout.split()
    assert out[:3] == ["True", "False", "_LinkedLibrary"]
    assert out[3:] == [f"initlab.nn.kernels.{m}" for m in ("norm", "ops", "replica", "skip")]


def _add_one(x):
    return x + 1


def test_the_kernel_cache_keeps_an_index_per_signature(tmp_path, monkeypatch):
    """Two signatures of a cached kernel save two index files (numba's one index per function
    lets two processes that save two signatures at once pair one's key with the other's code),
    and a fresh process (a new dispatcher) loads both from them."""
    from initlab.nn.kernels.compiler import cached_kernel

    monkeypatch.setattr(numba.core.config, "CACHE_DIR", str(tmp_path))
    first = cached_kernel(_add_one)
    assert first(1) == 2 and first(1.5) == 2.5
    indexes = sorted(tmp_path.rglob("*.nbi"))
    assert len(indexes) == 2 and len(set(p.name for p in indexes)) == 2
    again = cached_kernel(_add_one)
    assert again(2) == 3 and again(2.5) == 3.5
    assert sum(again.stats.cache_hits.values()) == 2 and not again.stats.cache_misses
