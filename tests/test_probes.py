"""Probes: statistics on hand-made arrays, symmetry and awake layers end to end, the Jacobian
against finite differences, and the table's plumbing."""

import csv
import math

import numpy as np
import pytest

from initlab import data
from initlab.nn import Dense, Sequential
from initlab.probes import (
    HIST_EDGES,
    Probe,
    Table,
    awake_layers,
    distinct_units,
    jacobian_singular_values,
    layer_statistics,
    summarize,
)

COLUMNS = {"step", "replica", "layer", "units", "pre_mean", "pre_std", "pre_min", "pre_max",
           "act_mean", "act_std", "act_min", "act_max",
           "dead_fraction", "nonfinite_fraction", "saturated_fraction", "distinct_units", "rank",
           "grad_std", "weight_std", "weight_grad_std", "grad_weight_ratio", "awake",
           "update_ratio"}


@pytest.fixture(scope="module")
def moons():
    X, y, _, _ = data.moons(0)
    return X, y


def _small(replicas=3, hidden="tanh"):
    return (Sequential([Dense(8, hidden, init="glorot_normal"), Dense(1, "sigmoid")])
            .compile("binary_crossentropy").build(2, rng=0, replicas=replicas))


# --- layer_statistics -----------------------------------------------------------------------

def test_layer_statistics_exact_on_a_hand_made_layer():
    # replica 0: unit 0 is 0 on every sample (dead); unit 3 is 0 on all but one (alive)
    r0 = np.array([[0.0, 1.0, 2.0, 0.0],
                   [0.0, 3.0, 0.0, 0.0],
                   [0.0, 5.0, -2.0, 7.0]])
    a = np.stack([r0, np.zeros((3, 4))])
    stats = layer_statistics(a, "relu")
    # 12 values summing to 16, squares summing to 92: var = 92/12 - (4/3)^2 = 53/9
    assert stats["act_mean"][0] == pytest.approx(4 / 3, rel=1e-15)
    assert stats["act_std"][0] == pytest.approx(math.sqrt(53) / 3, rel=1e-14)
    assert stats["act_min"][0] == -2.0 and stats["act_max"][0] == 7.0
    assert stats["dead_fraction"][0] == 0.25
    assert stats["dead_fraction"][1] == 1.0  # every unit of the all-zero replica is dead
    assert stats["act_mean"][1] == 0.0 and stats["act_std"][1] == 0.0
    assert np.all(stats["nonfinite_fraction"] == 0.0)
    assert np.all(np.isnan(stats["saturated_fraction"]))  # relu has no bounds


def test_saturation_tanh_is_within_003_of_plus_or_minus_1():
    a = np.array([[[-0.99, -0.97, 0.5, 0.97], [0.969, 0.0, 0.98, -0.2]]])
    assert layer_statistics(a, "tanh")["saturated_fraction"][0] == 0.5
    assert np.isnan(layer_statistics(a, "relu")["saturated_fraction"][0])
    assert layer_statistics(0.9 * a, "tanh")["saturated_fraction"][0] == 0.0  # control


def test_saturation_sigmoid_is_within_003_of_0_or_1():
    a = np.array([[[0.01, 0.03, 0.5, 0.97], [0.99, 0.031, 0.969, 0.2]]])
    assert layer_statistics(a, "sigmoid")["saturated_fraction"][0] == 0.5
    # the same numbers read as tanh outputs: only |a| >= 0.97 counts
    assert layer_statistics(a, "tanh")["saturated_fraction"][0] == 0.25


def test_nonfinite_values_are_counted_and_left_out_of_the_moments():
    a = np.array([[[1.0, np.inf, 3.0], [np.nan, -1.0, 5.0]]])
    stats = layer_statistics(a, "tanh")
    assert stats["nonfinite_fraction"][0] == pytest.approx(2 / 6, rel=1e-15)
    # the finite values 1, 3, -1, 5: mean 2, var 36/4 - 4 = 5
    assert stats["act_mean"][0] == 2.0
    assert stats["act_std"][0] == pytest.approx(math.sqrt(5), rel=1e-15)
    assert stats["act_min"][0] == -1.0 and stats["act_max"][0] == 5.0
    assert stats["dead_fraction"][0] == 0.0


def test_finite_replicas_get_the_moments_of_the_nan_skipping_path_exactly():
    """moments and the extremes take a short path when every value is finite: the same
    numbers as the general one, which a replica with a NaN sends them through."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5, 40)) * np.array([1e-200, 1.0, 1e200])[:, None, None]
    with_nan = np.concatenate([x, np.full((1, 5, 40), np.nan)])
    with_nan[3, 0, 0] = 1.0  # a replica with one finite value
    fast, general = layer_statistics(x, "tanh", z=x), layer_statistics(with_nan, "tanh", z=x)
    for key in ("act_mean", "act_std", "act_min", "act_max"):
        np.testing.assert_array_equal(fast[key], general[key][:3], err_msg=key)
    assert np.all(np.isfinite(fast["act_std"]) & (fast["act_std"] > 0))  # no overflow
    assert general["act_mean"][3] == 1.0 and general["act_std"][3] == 0.0


# --- distinct_units -------------------------------------------------------------------------

def test_distinct_units_random_constant_and_duplicated_columns():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 7))
    assert distinct_units(W) == 7
    assert distinct_units(W, rng.standard_normal(7)) == 7
    assert distinct_units(np.full((5, 7), 0.3)) == 1
    W[:, 4] = W[:, 1]
    assert distinct_units(W) == 6


def test_distinct_units_tolerance_is_relative():
    W = np.ones((4, 3))
    W[2, 1] *= 1 + 1e-12  # below the default rtol 1e-9
    assert distinct_units(W) == 1
    W = np.ones((4, 3))
    W[2, 1] += 1e-3
    assert distinct_units(W) == 2
    assert distinct_units(W, rtol=1e-2) == 1  # a looser tolerance merges them: rtol is used


def test_distinct_units_counts_the_bias():
    W = np.ones((3, 4))
    assert distinct_units(W) == 1
    assert distinct_units(W, np.zeros(4)) == 1
    assert distinct_units(W, np.arange(4.0)) == 4
    assert distinct_units(np.zeros((3, 4)), np.zeros(4)) == 1


def test_distinct_units_many_near_duplicates_in_shuffled_order():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 40))
    copies = [base, base * (1 + 1e-13 * rng.standard_normal(base.shape)), base.copy()]
    W = np.concatenate(copies, axis=1)[:, rng.permutation(120)]
    assert distinct_units(W) == 40
    W[0, 0] += 1e-6 * max(1.0, abs(W[0, 0]))  # one unit now differs from its copies
    assert distinct_units(W) == 41


# --- Probe during fit -----------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [None, 64])
def test_probe_records_every_kth_epoch_and_removes_its_hooks(moons, batch_size):
    X, y = moons
    model = _small(replicas=3)
    with Probe(model, every=3) as probe:
        model.fit(X, y, epochs=10, learning_rate=0.1, batch_size=batch_size)
    table = probe.table
    assert len(table) == 4 * 3 * 2  # steps 0, 3, 6, 9 x replicas x layers
    assert probe.steps == [0, 3, 6, 9]
    assert sorted(set(table.column("step"))) == [0, 3, 6, 9]
    assert set(table.columns) == COLUMNS
    assert sorted(set(table.column("replica"))) == [0, 1, 2]
    assert sorted(set(table.column("layer"))) == [0, 1]
    assert np.all(np.isfinite(table.column("grad_std")))
    model.fit(X, y, epochs=4, learning_rate=0.1)  # epochs 10-13 include 12, a multiple of 3
    assert len(probe.table) == 24 and probe.steps == [0, 3, 6, 9]


def test_probe_removes_its_hooks_when_the_block_raises(moons):
    X, y = moons
    model = _small(replicas=1)
    with pytest.raises(RuntimeError, match="boom"), Probe(model) as probe:
        model.fit(X, y, epochs=2)
        raise RuntimeError("boom")
    recorded = len(probe.table)
    assert recorded == 2 * 2
    model.fit(X, y, epochs=2)
    assert len(probe.table) == recorded


def test_constant_init_keeps_every_hidden_layer_one_unit(moons):
    X, y = moons

    def net(init):
        return (Sequential([Dense(8, "relu", init=init), Dense(4, "relu", init=init),
                            Dense(1, "sigmoid", init=init)])
                .compile("binary_crossentropy").build(2, rng=0))

    model = net({"name": "constant", "value": 0.5})
    with Probe(model, every=20) as probe:
        model.fit(X, y, epochs=200, learning_rate=0.5)
    assert probe.steps == list(range(0, 200, 20))
    assert not np.allclose(model.layers[0].params["W"], 0.5)  # it did train
    for layer in (0, 1):
        rows = probe.table.where(layer=layer)
        assert len(rows) == 10
        assert np.all(rows.column("distinct_units") == 1)
        assert np.all(rows.column("rank") == 1)

    control = net("he_normal")  # broken symmetry: every unit its own
    with Probe(control, every=20) as probe:
        control.fit(X, y, epochs=200, learning_rate=0.5)
    for layer, units in ((0, 8), (1, 4)):
        rows = probe.table.where(layer=layer)
        assert np.all(rows.column("distinct_units") == units)
        assert np.all(rows.column("rank") > 1)


def test_zero_weights_wake_one_layer_per_iteration_from_the_top(moons):
    # With every W = 0, dW_l = a_{l-1}^T dz_l and dz_l = (dz_{l+1} W_{l+1}^T) * phi'(z_l): only
    # the output layer gets a gradient at iteration 0, and W_{l+1} first moves at the
    # iteration layer l+1 woke; so at iteration t exactly the last t+1 layers are awake.
    X, y = moons
    X, y = X[:100], y[:100]
    bias = {"name": "normal", "std": 1.0}
    model = Sequential([Dense(6, "tanh", init="zeros", bias_init=bias) for _ in range(5)]
                       + [Dense(1, "sigmoid", init="zeros", bias_init=bias)])
    model.compile("binary_crossentropy").build(2, rng=0)
    n_layers = len(model.layers)
    with Probe(model, every=1) as probe:
        model.fit(X, y, epochs=n_layers + 3, learning_rate=0.5)
    steps, awake = awake_layers(probe.table)
    assert list(steps) == list(range(n_layers + 3))
    assert awake.shape == (n_layers + 3, n_layers)
    for t in steps:
        expected = np.arange(n_layers) >= n_layers - 1 - t
        assert np.array_equal(awake[t], expected), (t, awake[t])
    assert awake[n_layers - 1:].all()  # from iteration L-1 on, every layer learns
    grad = probe.table.column("weight_grad_std").reshape(awake.shape)
    assert np.all((grad > 0) == awake)


# --- update ratio ---------------------------------------------------------------------------

def test_probe_as_callback_records_the_update_ratio_of_plain_sgd(moons):
    X, y = moons
    model = _small(replicas=2)
    lr = 0.3
    with Probe(model, every=2) as probe:
        model.fit(X, y, epochs=6, learning_rate=lr, callbacks=[probe])
    table = probe.table
    assert len(table) == 3 * 2 * 2
    ratio = table.column("update_ratio")
    expected = lr * table.column("weight_grad_std") / table.column("weight_std")
    assert np.all(ratio > 0)
    np.testing.assert_allclose(ratio, expected, rtol=1e-9, atol=0)


def test_update_ratio_with_momentum_is_not_lr_times_gradient_ratio(moons):
    # negative control: heavy-ball momentum moves W by lr * velocity, not lr * dW, after step 0
    X, y = moons
    model = _small(replicas=1)
    lr = 0.3
    with Probe(model, every=1) as probe:
        model.fit(X, y, epochs=4, learning_rate=lr, callbacks=[probe],
                  optimizer={"name": "sgd", "momentum": 0.9})
    table = probe.table
    ratio = table.column("update_ratio")
    expected = lr * table.column("weight_grad_std") / table.column("weight_std")
    step = table.column("step")
    np.testing.assert_allclose(ratio[step == 0], expected[step == 0], rtol=1e-9)
    assert np.all(np.abs(ratio[step >= 2] / expected[step >= 2] - 1) > 1e-3)


def test_update_ratio_is_nan_without_the_callback(moons):
    X, y = moons
    model = _small(replicas=2)
    with Probe(model, every=2) as probe:
        model.fit(X, y, epochs=4, learning_rate=0.3)
    ratio = probe.table.column("update_ratio")
    assert len(ratio) == 2 * 2 * 2 and np.all(np.isnan(ratio))
    assert np.all(np.isfinite(probe.table.column("weight_grad_std")))


# --- record and histograms ------------------------------------------------------------------

def test_record_gives_one_step_and_histograms_count_every_output(moons):
    X, y = moons
    X, y = X[:50], y[:50]
    model = (Sequential([Dense(8, "tanh"), Dense(5, "relu"), Dense(1, "sigmoid")])
             .compile("binary_crossentropy").build(2, rng=0, replicas=2))
    probe = Probe(model)
    table = probe.record(X, y)
    assert len(table) == 2 * 3
    assert set(table.column("step")) == {0}
    assert probe.steps == [0]
    for layer, units in enumerate((8, 5, 1)):
        counts = probe.histogram(layer)
        assert counts.shape == (1, len(HIST_EDGES) - 1)
        assert counts.sum(axis=1).tolist() == [50 * units]
        assert probe.histogram(layer, replica=1).sum() == 50 * units
    # the histogram agrees with the layer's outputs, bin by bin
    out = model.traces[0].a
    np.testing.assert_array_equal(probe.histogram(0, replica=1)[0],
                                  np.histogram(out[1], HIST_EDGES)[0])
    probe.record(X[:20], y[:20])  # a second batch: a second histogram row
    assert probe.histogram(1).shape[0] == 2
    assert probe.histogram(1)[1].sum() == 20 * 5
    assert len(model.forward_hooks) == 0  # record detaches itself


def test_record_after_training_ignores_every(moons):
    X, y = moons
    model = _small(replicas=1)
    model.fit(X, y, epochs=3)
    probe = Probe(model, every=2)
    table = probe.record(X[:20], y[:20])
    assert len(table) == 2
    assert set(table.column("step")) == {3}


# --- Jacobian -------------------------------------------------------------------------------

def _linear_net(depth, width, init, use_bias):
    return Sequential([Dense(width, "linear", init=init, use_bias=use_bias)
                       for _ in range(depth)]).build(width, rng=0, replicas=2)


@pytest.mark.parametrize("use_bias", [False, True])
def test_orthogonal_linear_network_is_an_isometry(use_bias):
    X = np.random.default_rng(0).standard_normal((5, 6))
    s = jacobian_singular_values(_linear_net(10, 6, "orthogonal", use_bias), X)
    assert s.shape == (2, 5, 6)
    np.testing.assert_allclose(s, 1.0, rtol=0, atol=1e-10)
    gain = 1.5
    s = jacobian_singular_values(
        _linear_net(10, 6, {"name": "orthogonal", "gain": gain}, use_bias), X)
    np.testing.assert_allclose(s, gain**10, rtol=1e-10)
    # control: Gaussian weights of the same scale are far from an isometry
    s = jacobian_singular_values(_linear_net(10, 6, "glorot_normal", use_bias), X)
    assert np.all(s.max(axis=-1) / s.min(axis=-1) > 10)


def test_jacobian_agrees_with_finite_differences_of_predict():
    rng = np.random.default_rng(0)
    model = Sequential([Dense(5, "tanh", init="glorot_normal",
                              bias_init={"name": "normal", "std": 0.3}),
                        Dense(4, "tanh", init="glorot_normal"),
                        Dense(3, "sigmoid")]).build(3, rng=1, replicas=2)
    X = rng.standard_normal((4, 3))
    s = jacobian_singular_values(model, X)
    assert s.shape == (2, 4, 3)
    h = 1e-6
    for r in range(2):
        for i in range(len(X)):
            J = np.zeros((3, 3))
            for k in range(3):
                e = np.zeros((1, 3))
                e[0, k] = h
                J[k] = (model.predict(X[i:i + 1] + e)[r, 0]
                        - model.predict(X[i:i + 1] - e)[r, 0]) / (2 * h)
            np.testing.assert_allclose(s[r, i], np.linalg.svd(J, compute_uv=False),
                                       rtol=1e-6, atol=1e-9)
    assert not np.allclose(s[0], s[1])  # each replica its own Jacobian


def test_jacobian_refuses_a_softmax_output():
    model = Sequential([Dense(3, "tanh"), Dense(2, "softmax")]).build(2, rng=0)
    with pytest.raises(ValueError, match="softmax"):
        jacobian_singular_values(model, np.ones((2, 2)))


# --- tables ---------------------------------------------------------------------------------

def test_summarize_over_replicas():
    rows = [{"step": 0, "layer": 0, "replica": r, "v": v} for r, v in enumerate([1.0, 2.0, 6.0])]
    rows += [{"step": 0, "layer": 1, "replica": r, "v": v} for r, v in enumerate([4.0, 4.0, 4.0])]
    rows += [{"step": 5, "layer": 0, "replica": r, "v": v} for r, v in enumerate([-1.0, 1.0, 0.0])]
    out = summarize(Table(rows), "v")
    assert [(r["step"], r["layer"]) for r in out.rows] == [(0, 0), (0, 1), (5, 0)]
    first = out.rows[0]
    assert first["mean"] == 3.0 and first["min"] == 1.0 and first["max"] == 6.0
    assert first["std"] == pytest.approx(math.sqrt(14 / 3), rel=1e-15)
    assert out.rows[1]["std"] == 0.0
    by_layer = summarize(Table(rows), "v", by=("layer",))
    assert [r["layer"] for r in by_layer.rows] == [0, 1]
    assert by_layer.rows[0]["mean"] == pytest.approx(9 / 6) and by_layer.rows[0]["min"] == -1.0


def test_table_column_where_and_csv_round_trip(moons, tmp_path):
    X, y = moons
    model = _small(replicas=3)
    with Probe(model, every=2) as probe:
        model.fit(X, y, epochs=4, learning_rate=0.1)
    table = probe.table
    sub = table.where(layer=1, replica=2)
    assert len(sub) == 2 and all(r["layer"] == 1 and r["replica"] == 2 for r in sub.rows)
    assert sub.column("step").tolist() == [0, 2]
    assert len(table.where(layer=7)) == 0
    assert np.array_equal(table.column("units"), np.where(table.column("layer") == 0, 8, 1))

    path = table.to_csv(tmp_path / "probe.csv")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        back = list(reader)
        assert reader.fieldnames == table.columns
    assert len(back) == len(table)
    for row, read in zip(table.rows, back, strict=True):
        for key, value in row.items():
            if isinstance(value, bool):
                assert read[key] == str(value)
            elif isinstance(value, float) and math.isnan(value):
                assert read[key] == "nan"
            else:
                assert type(value)(read[key]) == value, key


# --- errors ---------------------------------------------------------------------------------

def test_probe_errors():
    with pytest.raises(ValueError, match="build the model"):
        Probe(Sequential([Dense(2)]))
    model = _small(replicas=1)
    with pytest.raises(ValueError, match="every=0"):
        Probe(model, every=0)
    with pytest.raises(ValueError, match="every=1.5"):
        Probe(model, every=1.5)
    table = Table([{"step": 0, "act_std": 1.0}])
    with pytest.raises(KeyError, match="no column 'nope'; columns: step, act_std"):
        table.column("nope")


def test_probe_as_a_bare_callback_attaches_itself_for_the_fit():
    from sklearn.datasets import make_moons

    X, y = make_moons(60, noise=0.2, random_state=0)
    model = Sequential([Dense(8, "relu", init="he_normal"), Dense(1, "sigmoid")])
    model.compile("binary_crossentropy").build(2, rng=0, replicas=2)
    probe = Probe(model, every=2)
    model.fit(X, y, epochs=6, learning_rate=0.1, callbacks=[probe])
    table = probe.table
    assert sorted(set(table.column("step"))) == [0, 2, 4]
    assert np.all(np.isfinite(table.column("update_ratio")))
    assert not model.hooked  # detached after the fit
    with probe:  # entered twice (here and by fit): recorded once, detached at the end
        model.fit(X, y, epochs=2, learning_rate=0.1, callbacks=[probe])
    assert len(probe.table) == len(table) + 2 * 2
    assert not model.hooked


# --- the one schema: pre-activation and activation, overflow-safe, arrays -------------------

def test_layer_statistics_read_both_z_and_phi_z_and_survive_huge_finite_values():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 50, 4)) * np.array([1e200, 1e-200])[:, None, None]
    stats = layer_statistics(np.maximum(z, 0), "relu", z)
    expected = [np.std(z[r] / abs(z[r]).max()) * abs(z[r]).max() for r in range(2)]
    np.testing.assert_allclose(stats["pre_std"], expected, rtol=1e-12)
    assert np.all(np.isfinite(stats["act_std"])) and np.all(stats["act_std"] > 0)
    assert 1e199 < stats["act_std"][0] < 1e201 and 1e-201 < stats["act_std"][1] < 1e-199
    # a plain np.std overflows on the first replica: the case this guards against
    with np.errstate(over="ignore"):
        assert np.isinf(np.std(z[0]))
    none = layer_statistics(np.maximum(z, 0), "relu")
    assert np.all(np.isnan(none["pre_std"])) and np.all(np.isfinite(none["act_std"]))


def test_probe_records_pre_activations_and_a_forward_pass_without_a_loss(moons):
    X, _ = moons
    model = _small(replicas=2)
    probe = Probe(model)
    table = probe.record(X)  # no y: no loss, no backward
    assert len(table) == 2 * len(model.layers)
    assert np.all(np.isnan(table.column("grad_std")))
    model.forward(model.prepare(X)[0])
    for i, trace in enumerate(model.traces):
        for r in range(2):
            row = table.where(layer=i, replica=r).rows[0]
            assert row["pre_std"] == pytest.approx(np.std(trace.z[r]), rel=1e-12)
            assert row["act_std"] == pytest.approx(np.std(trace.a[r]), rel=1e-12)


def test_table_array_is_layers_by_replicas_and_refuses_ambiguous_cells(moons):
    X, y = moons
    model = _small(replicas=3)
    with Probe(model, every=2) as probe:
        model.fit(X, y, epochs=3, learning_rate=0.1)
    table = probe.table
    grid = table.array("act_std", step=2)
    assert grid.shape == (len(model.layers), 3)
    assert grid[1, 2] == table.where(step=2, layer=1, replica=2).rows[0]["act_std"]
    with pytest.raises(ValueError, match="step="):
        table.array("act_std")  # steps 0 and 2 share every cell
    with pytest.raises(ValueError, match="no rows"):
        table.array("act_std", step=99)
