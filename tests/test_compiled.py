"""The compiled engine inside fit: the same model trained by fit(engine="numba") and by the
NumPy reference ends at the same weights, history and optimizer state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

from initlab.nn import BatchNorm, Dense, LayerNorm, Residual, Sequential, gradcheck, sweep

pytest.importorskip("numba")

VARIANTS = {"he": "he_normal", "zeros": "zeros", "glorot": "glorot_uniform"}


def _pair(optimizer="sgd"):
    # zero weights on balanced moons sit at a stationary point where the output bias's gradient
    # is a sum that cancels to rounding noise; Adam divides by its size and amplifies it, so
    # that start is compared bit for bit under SGD only (as chaotic starts, by distribution)
    variants = VARIANTS if optimizer != "adam" else {k: v for k, v in VARIANTS.items()
                                                     if k != "zeros"}

    def make():
        model = Sequential([Dense(12, "relu"), Dense(6, "tanh"), Dense(1, "sigmoid")])
        return model.compile("binary_crossentropy", optimizer).build(
            2, **sweep(variants, seeds=range(3)))
    return make(), make()


def _same(a, b, rtol=1e-10):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=1e-13)
    assert a.history["epoch"] == b.history["epoch"]
    assert a.history["step"] == b.history["step"]
    np.testing.assert_allclose(np.array(a.history["cost"]), np.array(b.history["cost"]),
                               rtol=rtol)
    assert (a.epochs_trained, a.steps_trained) == (b.epochs_trained, b.steps_trained)


@pytest.mark.parametrize("optimizer", ["sgd", {"name": "sgd", "momentum": 0.9}, "adam"])
@pytest.mark.parametrize("budget", [dict(epochs=40), dict(steps=37, batch_size=64),
                                    dict(epochs=5, batch_size=50, shuffle=False)])
def test_fit_on_both_engines_ends_at_the_same_weights(optimizer, budget):
    X, y = make_moons(200, noise=0.2, random_state=0)
    compiled, reference = _pair(optimizer)
    compiled.fit(X, y, learning_rate=0.05, log_every=7, engine="numba", **budget)
    reference.fit(X, y, learning_rate=0.05, log_every=7, engine="numpy", **budget)
    assert compiled.history["engine"] == ["numba"] and reference.history["engine"] == ["numpy"]
    _same(compiled, reference)
    for s, t in zip(compiled.optimizer.state, reference.optimizer.state, strict=True):
        for key in t:
            np.testing.assert_allclose(s[key], t[key], rtol=1e-10, atol=1e-13)


def test_engines_alternate_within_one_training():
    """Optimizer state and streams pass between the engines: numba, numpy, numba = numpy x3."""
    X, y = make_moons(120, noise=0.2, random_state=1)
    mixed, reference = _pair("adam")
    for engine in ("numba", "numpy", "numba"):
        mixed.fit(X, y, learning_rate=0.01, epochs=6, batch_size=32, engine=engine)
        reference.fit(X, y, learning_rate=0.01, epochs=6, batch_size=32, engine="numpy")
    _same(mixed, reference)
    assert mixed.history["engine"] == ["numba", "numpy", "numba"]


@pytest.mark.parametrize("budget", [dict(epochs=23), dict(steps=61, batch_size=64)])
def test_a_probe_every_k_epochs_lets_the_kernels_run_the_epochs_between(budget):
    """Hooks that read every 4th epoch: those epochs on NumPy, the rest compiled. The probe's
    table, the weights, the log and the optimizer state are those of NumPy alone."""
    from initlab.probes import Probe

    X, y = make_moons(200, noise=0.2, random_state=3)
    mixed, reference = _pair("adam")
    tables = []
    for model, engine in ((mixed, "auto"), (reference, "numpy")):
        model.fit(X, y, learning_rate=0.01, epochs=2, engine="numpy")  # start off the grid
        with Probe(model, every=4, symmetry=False) as probe:
            model.fit(X, y, learning_rate=0.01, log_every=5, engine=engine, **budget)
        tables.append(probe.table)
    assert mixed.history["engine"] == ["numpy", "numba+numpy"]
    assert "engine=numba+numpy" in repr(mixed)
    _same(mixed, reference)
    got, want = tables
    assert sorted(set(got.column("step"))) == sorted(set(want.column("step"))) != []
    assert all(step % 4 == 0 for step in got.column("step"))
    for column in want.columns:
        np.testing.assert_allclose(np.asarray(got.column(column), dtype=float),
                                   np.asarray(want.column(column), dtype=float),
                                   rtol=1e-9, atol=1e-12, err_msg=column)
    for s, t in zip(mixed.optimizer.state, reference.optimizer.state, strict=True):
        for key in t:
            np.testing.assert_allclose(s[key], t[key], rtol=1e-10, atol=1e-13)


def test_hooks_without_a_period_or_on_every_epoch_keep_the_fit_on_numpy():
    from initlab.probes import Probe

    X, y = make_moons(60, noise=0.2, random_state=4)
    model, _ = _pair()
    with model.register_hook("forward", lambda i, layer, trace: None, every=3), \
            model.register_hook("backward", lambda i, layer, grads: None):
        model.fit(X, y, epochs=4)  # one hook reads every epoch
    with Probe(model, every=1):
        model.fit(X, y, epochs=3)
    with model.register_hook("forward", lambda i, layer, trace: None, every=2):
        model.fit(X, y, epochs=3)
    assert model.history["engine"] == ["numpy", "numpy", "numba+numpy"]
    assert not model.hooked and model.hook_periods == {}
    with pytest.raises(ValueError, match="every=0"):
        model.register_hook("forward", lambda i, layer, trace: None, every=0)


def test_auto_takes_the_kernels_for_dense_stacks_and_numpy_elsewhere(capsys):
    X, y = make_moons(60, noise=0.2, random_state=2)
    dense, _ = _pair()
    dense.fit(X, y, epochs=3, verbose=True)
    assert dense.history["engine"] == ["numba"]
    assert capsys.readouterr().out.count("Epoch") == 2  # epochs 0 and 2: logged as it goes
    normed = Sequential([Dense(6), LayerNorm("relu"), Dense(1, "sigmoid")])
    normed.compile("binary_crossentropy").build(2, rng=0)
    normed.fit(X, y, epochs=3)
    assert normed.history["engine"] == ["numba"]  # normalization layers compile too
    residual = Sequential([Dense(6, "relu"), Residual([Dense(6, "relu")]), Dense(1, "sigmoid")])
    residual.compile("binary_crossentropy").build(2, rng=0)
    residual.fit(X, y, epochs=3)
    assert residual.history["engine"] == ["numba"]  # and residual blocks of them
    nested = Sequential([Dense(6, "relu"), Residual([Residual([Dense(6, "relu")])]),
                         Dense(1, "sigmoid")])
    nested.compile("binary_crossentropy").build(2, rng=0)
    nested.fit(X, y, epochs=3)
    assert nested.history["engine"] == ["numpy"]
    with pytest.raises(ValueError, match="Dense, LayerNorm and BatchNorm layers"):
        nested.fit(X, y, epochs=1, engine="numba")
    last = Sequential([Dense(1), BatchNorm("sigmoid")]).compile("binary_crossentropy")
    last.build(2, rng=0).fit(X, y, epochs=1)
    assert last.history["engine"] == ["numpy"]  # the loss reads a Dense output in the kernels


def test_gradcheck_passes_after_a_compiled_fit():
    X, y = make_moons(40, noise=0.2, random_state=3)
    model, _ = _pair("adam")
    model.fit(X, y, learning_rate=0.01, epochs=20, engine="numba")
    assert gradcheck(model, X[:10], y[:10]).ok


def test_chaotic_inits_agree_in_distribution_not_bit_for_bit():
    """N(0, 1) x 10 amplifies rounding differences: the final costs over seeds are compared."""
    from scipy import stats

    X, y = make_moons(200, noise=0.2, random_state=0)

    def costs(engine):
        model = Sequential([Dense(12, "relu"), Dense(6, "relu"), Dense(1, "sigmoid")])
        model.compile("binary_crossentropy").build(
            2, **sweep({"large": {"name": "scaled_normal", "scale": 10.0}}, seeds=range(24)))
        model.fit(X, y, learning_rate=0.01, epochs=600, engine=engine)
        return np.asarray(model.evaluate(X, y)["loss"])

    compiled, reference = costs("numba"), costs("numpy")
    assert stats.ks_2samp(compiled, reference).pvalue > 1e-3
    assert abs(np.median(compiled) - np.median(reference)) < 0.25 * np.std(reference) + 1e-9
