"""The training loop: optimizer state across fits, step budgets, engines, replica coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

from initlab.nn import SGD, Adam, Dense, Sequential, parallel, sweep, training
from initlab.nn import optimizers as optim

OPTIMIZERS = {"sgd": {"name": "sgd"}, "momentum": {"name": "sgd", "momentum": 0.9},
              "nesterov": {"name": "sgd", "momentum": 0.9, "nesterov": True},
              "adam": {"name": "adam"}}


def _data(n=64):
    return make_moons(n, noise=0.2, random_state=3)


def _net(optimizer="sgd", replicas=3):
    model = Sequential([Dense(8, "tanh", init="he_normal"), Dense(1, "sigmoid")])
    return model.compile("binary_crossentropy", optimizer).build(2, rng=0, replicas=replicas)


def _weights(model):
    return [p.copy() for p in model.parameters()]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [None, 16])
def test_two_fits_equal_one_fit_for_every_optimizer(name, batch_size):
    X, y = _data()
    once = _net(OPTIMIZERS[name])
    once.fit(X, y, learning_rate=0.05, epochs=10, batch_size=batch_size, engine="numpy")
    twice = _net(OPTIMIZERS[name])
    twice.fit(X, y, learning_rate=0.05, epochs=5, batch_size=batch_size, engine="numpy")
    twice.fit(X, y, epochs=5, batch_size=batch_size, engine="numpy")
    for a, b in zip(_weights(once), _weights(twice), strict=True):
        np.testing.assert_array_equal(a, b)
    assert twice.epochs_trained == 10


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_new_learning_rate_keeps_the_optimizer_state(name):
    X, y = _data()
    model = _net(OPTIMIZERS[name])
    model.fit(X, y, learning_rate=0.05, epochs=5, engine="numpy")
    model.fit(X, y, learning_rate=0.02, epochs=5, engine="numpy")
    assert model.optimizer.learning_rate == 0.02
    # by hand: one optimizer object stepped 5 times at 0.05, then 5 at 0.02
    ref = _net(OPTIMIZERS[name])
    spec = dict(OPTIMIZERS[name])
    opt = optim.get(spec, learning_rate=0.05)
    for step in range(10):
        if step == 5:
            opt.learning_rate = 0.02
        ref.compute_gradients(X, y)
        opt.step(ref.parameters(), ref.gradients())
    for a, b in zip(_weights(model), _weights(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # a fresh state at the second fit would give other weights (so the test can fail)
    fresh = _net(OPTIMIZERS[name])
    fresh.fit(X, y, learning_rate=0.05, epochs=5, engine="numpy")
    fresh.fit(X, y, optimizer=optim.get(spec, learning_rate=0.02), epochs=5, engine="numpy")
    if name != "sgd":  # plain SGD has no state: the same either way
        assert not np.allclose(fresh.parameters()[0], model.parameters()[0], rtol=1e-12)


def test_a_new_optimizer_starts_a_fresh_state():
    X, y = _data()
    model = _net({"name": "adam"})
    model.fit(X, y, learning_rate=0.01, epochs=3, engine="numpy")
    model.fit(X, y, optimizer=Adam(0.01), epochs=3, engine="numpy")
    assert float(model.optimizer.state[0]["t"]) == 3.0


def test_steps_count_updates_and_may_end_inside_an_epoch():
    X, y = _data(64)  # 4 batches of 16 an epoch
    by_epochs = _net().fit(X, y, learning_rate=0.1, epochs=2, batch_size=16, engine="numpy")
    by_steps = _net().fit(X, y, learning_rate=0.1, steps=8, batch_size=16, engine="numpy")
    for a, b in zip(_weights(by_epochs), _weights(by_steps), strict=True):
        np.testing.assert_array_equal(a, b)
    odd = _net().fit(X, y, learning_rate=0.1, steps=9, batch_size=16, engine="numpy")
    assert (odd.steps_trained, odd.epochs_trained) == (9, 3)
    split = _net().fit(X, y, learning_rate=0.1, steps=8, batch_size=16, engine="numpy")
    split.fit(X, y, steps=1, batch_size=16, engine="numpy")
    for a, b in zip(_weights(odd), _weights(split), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(odd.parameters()[0], by_steps.parameters()[0])
    full = _net().fit(X, y, learning_rate=0.1, steps=5, engine="numpy")
    assert (full.steps_trained, full.epochs_trained) == (5, 5)
    assert full.history["step"] == [0, 4]


@pytest.mark.parametrize("bad", [dict(epochs=2, steps=3), dict(steps=-1), dict(epochs=1.5),
                                 dict(engine="jax"), dict(log_every=-2)])
def test_bad_budgets_and_engines_are_named(bad):
    X, y = _data()
    with pytest.raises(ValueError, match=next(iter(bad))):
        _net().fit(X, y, **bad)


def test_the_engine_that_ran_is_recorded_and_a_refusal_says_why():
    X, y = _data()
    model = _net()
    model.fit(X, y, epochs=2, engine="numpy")
    assert model.history["engine"] == ["numpy"]
    assert "engine=numpy" in repr(model)
    with model.register_hook("forward", lambda i, layer, t: None), \
            pytest.raises(ValueError, match="hooks"):
        model.fit(X, y, epochs=1, engine="numba")
    probe_like = [lambda m, e: None]
    assert training.choose_engine(model, "auto", probe_like) == "numpy"


def test_replicas_know_their_coordinates():
    model = Sequential([Dense(1, "sigmoid")])
    model.compile("binary_crossentropy")
    model.build(2, **sweep({"zeros": "zeros", "he": "he_normal"}, seeds=[4, 5, 6]))
    assert model.select(variant="he") == [3, 4, 5]
    assert model.select(variant="he", seed=5) == [4]
    assert model.select(seed=[4, 6]) == [0, 2, 3, 5]
    assert model.coordinate("seed") == [4, 5, 6, 4, 5, 6]
    sub = model.take(model.select(variant="zeros"))
    assert sub.coordinate("variant") == ["zeros"] * 3
    assert np.all(sub.layers[0].params["W"] == 0)
    with pytest.raises(ValueError, match="'init'"):
        model.select(init="he")
    plain = Sequential([Dense(1)]).build(2, replicas=2)
    assert plain.coords == [{"replica": 0}, {"replica": 1}]


def test_workers_never_fork_and_default_to_one_process():
    assert parallel.context().get_start_method() != "fork"
    assert training._workers(None, 30) == 1
    X, y = _data()
    alone, split = _net(SGD(0.1, momentum=0.5)), _net(SGD(0.1, momentum=0.5))
    alone.fit(X, y, epochs=4, engine="numpy")
    split.fit(X, y, epochs=4, engine="numpy", workers=2)
    for a, b in zip(_weights(alone), _weights(split), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(alone.optimizer.state[0]["velocity"],
                               split.optimizer.state[0]["velocity"], rtol=1e-12)


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_divergence_is_data_and_one_warning_in_words(loss, engine):
    import warnings

    from sklearn.datasets import make_moons

    X, y = make_moons(100, noise=0.2, random_state=0)
    model = Sequential([Dense(8, "relu"), Dense(1, "sigmoid" if "cross" in loss else "linear")])
    model.compile(loss).build(2, rng=[np.random.SeedSequence(s) for s in range(3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, learning_rate=1e6, epochs=20, log_every=1, engine=engine)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "encountered" in m], messages  # no raw numpy warnings
    (message,) = messages
    assert "diverged" in message and "learning rate 1e+06" in message and "epoch" in message
    diverged = model.history["diverged"]
    assert len(diverged) == 3 and all(d >= 0 for d in diverged)
    costs = np.array(model.history["cost"])
    for r, epoch in enumerate(diverged):
        row = model.history["epoch"].index(epoch)
        bad = ~np.isfinite(costs[row, r]) or costs[row, r] > 1e3 * costs[0, r]
        assert bad and all(np.isfinite(costs[k, r]) and costs[k, r] <= 1e3 * costs[0, r]
                           for k in range(row))  # the first such epoch
    assert model.take([1]).history["diverged"] == [diverged[1]]


def test_a_healthy_fit_records_no_divergence_and_warns_nothing():
    import warnings

    from sklearn.datasets import make_moons

    X, y = make_moons(100, noise=0.2, random_state=0)
    model = Sequential([Dense(8, "relu"), Dense(1, "sigmoid")]).compile("binary_crossentropy")
    model.build(2, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y, learning_rate=0.1, epochs=50, log_every=10)
    assert model.history["diverged"] == [-1]
