"""Mean-field theory: closed forms where they exist, and the prediction against a wide network."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from initlab import theory
from initlab.nn import Dense, Sequential
from initlab.nn.activations import SELU


@pytest.mark.parametrize("q,sigma_w,sigma_b", [(1.0, 1.0, 0.0), (2.5, 1.7, 0.3), (0.01, 0.5, 1)])
def test_relu_and_linear_variance_maps_have_closed_forms(q, sigma_w, sigma_b):
    # E[relu(sqrt(q) z)^2] = q / 2 exactly; the even Gauss-Hermite rule gets it exactly
    assert theory.variance_map("relu", q, sigma_w, sigma_b) == pytest.approx(
        sigma_w**2 * q / 2 + sigma_b**2, rel=1e-12)
    assert theory.variance_map("linear", q, sigma_w, sigma_b) == pytest.approx(
        sigma_w**2 * q + sigma_b**2, rel=1e-12)


def test_variance_map_of_tanh_matches_independent_quadrature():
    q, sigma_w, sigma_b = 0.7, 1.3, 0.2
    expected = sigma_w**2 * integrate.quad(
        lambda z: np.tanh(math.sqrt(q) * z) ** 2 * stats.norm.pdf(z), -np.inf, np.inf)[0]
    assert theory.variance_map("tanh", q, sigma_w, sigma_b) == pytest.approx(
        expected + sigma_b**2, rel=1e-10)


def test_propagate_iterates_the_map_from_the_input():
    q = theory.propagate("relu", 2.0, 0.1, q0=3.0, depth=4)
    expected = [4.0 * 3.0 + 0.01]
    for _ in range(3):
        expected.append(4.0 * expected[-1] / 2 + 0.01)
    np.testing.assert_allclose(q, expected, rtol=1e-12)


def test_relu_fixed_point_and_divergence():
    # q* = sigma_b^2 / (1 - sigma_w^2 / 2) below criticality; unbounded above it
    assert theory.fixed_point("relu", 1.0, 0.1) == pytest.approx(0.01 / 0.5, rel=1e-9)
    assert theory.fixed_point("relu", 1.5, 0.1) == math.inf
    assert theory.fixed_point("tanh", 0.8, 0.0) == 0.0  # ordered, no bias: the signal dies


def test_selu_with_lecun_normal_is_self_normalizing():
    q = theory.fixed_point("selu", 1.0, 0.0)  # LeCun normal: sigma_w^2 = 1
    z = np.linspace(-12, 12, 200_001)
    pdf = stats.norm.pdf(z) * (z[1] - z[0])
    a = SELU().forward(math.sqrt(q) * z)
    assert np.sum(a * pdf) == pytest.approx(0.0, abs=1e-3)  # activations: mean 0
    assert np.sum(a**2 * pdf) == pytest.approx(1.0, abs=1e-3)  # and variance 1
    assert q == pytest.approx(1.0, abs=1e-3)


def test_chi1_of_relu_is_half_sigma_w_squared():
    for sigma_w in (0.5, 1.0, math.sqrt(2), 2.0):
        assert theory.chi1("relu", sigma_w) == pytest.approx(sigma_w**2 / 2, rel=1e-12)


def test_critical_points_give_he_and_unit_tanh():
    assert theory.critical_sigma_w("relu") == pytest.approx(math.sqrt(2), rel=1e-9)
    assert theory.critical_sigma_w("tanh") == pytest.approx(1.0, abs=1e-6)
    critical = theory.critical_sigma_w("tanh", sigma_b=0.05)
    assert critical > 1.0  # a bias pushes the edge of chaos out
    assert theory.chi1("tanh", critical, 0.05) == pytest.approx(1.0, abs=1e-8)
    # a callable is handled like the named activation (derivative by differences)
    assert theory.critical_sigma_w(np.tanh, 0.05) == pytest.approx(critical, rel=1e-5)


def test_phases_and_depth_scales():
    ordered, chaotic = theory.chi1("tanh", 0.8, 0.05), theory.chi1("tanh", 2.0, 0.05)
    assert ordered < 1 < chaotic
    xi_q, xi_c = theory.depth_scales("tanh", 0.8, 0.05)
    # ordered phase: c* = 1, so the correlation's slope there is chi_1 itself
    assert xi_c == pytest.approx(-1 / math.log(ordered), rel=1e-6)
    assert 0 < xi_q < xi_c
    critical = theory.critical_sigma_w("tanh", 0.05)
    assert theory.depth_scales("tanh", critical, 0.05)[1] > 100  # diverges at criticality
    assert theory.depth_scales("tanh", 1.5, 0.05)[1] < 50


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="sigma_w must be finite and > 0; got sigma_w=-1"):
        theory.chi1("tanh", -1)
    with pytest.raises(ValueError, match="sigma_b must be finite and >= 0"):
        theory.fixed_point("tanh", 1.0, -0.5)
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        theory.chi1("tahn", 1.0)


def _measured_std(activation, sigma_w, sigma_b, *, width=1024, depth=20, replicas=4, n=200):
    init = {"name": "variance_scaling", "scale": sigma_w**2, "mode": "fan_in",
            "distribution": "normal"}
    bias = {"name": "normal", "std": sigma_b} if sigma_b else "zeros"
    model = Sequential([Dense(width, activation, init=init, bias_init=bias)
                        for _ in range(depth)]).compile("mse").build(width, rng=0,
                                                                      replicas=replicas)
    X = np.random.default_rng(1).standard_normal((n, width))
    stds = []
    with model.register_hook("forward", lambda i, layer, t: stds.append(
            t.a.reshape(replicas, -1).std(axis=1))):
        model.predict(X)
    return np.array(stds), float(np.mean(X**2))


@pytest.mark.parametrize("activation,sigma_w,sigma_b", [("relu", math.sqrt(2), 0.0),
                                                        ("tanh", 1.5, 0.05)])
def test_prediction_matches_a_wide_network_layer_by_layer(activation, sigma_w, sigma_b):
    measured, q0 = _measured_std(activation, sigma_w, sigma_b)
    predicted = theory.activation_std(activation,
                                      theory.propagate(activation, sigma_w, sigma_b, q0, 20))
    # per layer, the mean over 4 replicas of width 1,024 (one ReLU replica wanders ~10 %)
    np.testing.assert_allclose(measured.mean(axis=1), predicted, rtol=0.05)
    # negative control: the prediction for another sigma_w is far off at depth
    wrong = theory.activation_std(activation,
                                  theory.propagate(activation, 0.8 * sigma_w, sigma_b, q0, 20))
    assert np.max(np.abs(measured.mean(axis=1) / wrong - 1)) > 0.2


def test_propagate_takes_one_sigma_w_per_layer_and_zero_layers():
    from initlab import theory

    same = theory.propagate("tanh", 1.5, 0.1, 2.0, 4)
    np.testing.assert_allclose(theory.propagate("tanh", [1.5] * 4, 0.1, 2.0), same, rtol=1e-15)
    mixed = theory.propagate("tanh", [1.0, 2.0, 0.0, 1.0], 0.1, 2.0)
    assert mixed[0] == pytest.approx(1.0 * 2.0 + 0.01)
    assert mixed[1] == pytest.approx(theory.variance_map("tanh", mixed[0], 2.0, 0.1))
    assert mixed[2] == pytest.approx(0.01)  # all-zero weights: only the bias remains
    with pytest.raises(ValueError, match="depth=3 but 4"):
        theory.propagate("tanh", [1.0] * 4, 0.0, 1.0, 3)


def test_correlation_map_off_the_fixed_point_matches_monte_carlo():
    """Two pre-activations of variance q (not q*) and correlation c: the next layer's
    correlation is their next covariance over their next variance."""
    rng = np.random.default_rng(0)
    q, c, sw2, sb2, n = 0.5, 0.3, 1.5, 0.05, 2_000_000
    z1 = rng.standard_normal(n)
    z2 = c * z1 + np.sqrt(1 - c * c) * rng.standard_normal(n)
    a, b = np.tanh(np.sqrt(q) * z1), np.tanh(np.sqrt(q) * z2)
    sampled = (sw2 * np.mean(a * b) + sb2) / (sw2 * np.mean(a * a) + sb2)
    exact = theory.correlation_map("tanh", c, q, np.sqrt(sw2), np.sqrt(sb2))
    assert exact == pytest.approx(sampled, abs=2e-3)  # MC error ~ 1 / sqrt(n)
    assert abs(exact - c) > 0.05  # the map moved it: the check is not trivial


def test_correlation_steps_are_the_scalar_maps_pair_by_pair():
    rng = np.random.default_rng(1)
    c, q = rng.uniform(-0.9, 0.99, 7), rng.uniform(0.05, 3.0, 7)
    for activation, sw, sb in (("tanh", 1.3, 0.2), ("relu", np.sqrt(2.0), 0.0), ("gelu", 2.0, 0.1)):
        c_next, q_next = theory.correlation_steps(activation, c, q, sw, sb)
        np.testing.assert_allclose(c_next, [theory.correlation_map(activation, ci, qi, sw, sb)
                                            for ci, qi in zip(c, q, strict=True)], rtol=1e-13)
        np.testing.assert_allclose(q_next, [theory.variance_map(activation, qi, sw, sb)
                                            for qi in q], rtol=1e-13)
        assert np.max(np.abs(c_next - c)) > 0.01  # the maps moved them


def test_cached_fixed_point_equals_a_fresh_one():
    """q* of a named activation is cached (chi1, c* and the depth scales each need it): the
    cached value is the one an uncached search finds."""
    for sw2 in (0.7, 1.76, 3.1):
        sw, sb = np.sqrt(sw2), np.sqrt(0.05)
        fresh = theory._fixed_point("tanh", sw, sb)
        assert theory.fixed_point("tanh", sw, sb) == fresh == theory.fixed_point("tanh", sw, sb)
        assert theory.variance_map("tanh", fresh, sw, sb) == pytest.approx(fresh, rel=1e-12)


def test_correlation_fixed_point_and_phase_diagram():
    sb = np.sqrt(0.05)
    for sw2 in (1.0, 1.5):  # ordered: every pair of inputs ends up aligned
        assert theory.correlation_fixed_point("tanh", np.sqrt(sw2), sb) == 1.0
    sw = 2.0
    c = theory.correlation_fixed_point("tanh", sw, sb)
    q = theory.fixed_point("tanh", sw, sb)
    assert 0 < c < 1
    assert theory.correlation_map("tanh", c, q, sw, sb) == pytest.approx(c, abs=1e-9)
    diagram = theory.phase_diagram("tanh", [0.8, 4.0], [0.0, 0.05])
    assert diagram["chi1"].shape == (2, 2)
    assert np.all(diagram["chi1"][:, 0] < 1) and np.all(diagram["chi1"][:, 1] > 1)
    # Schoenholz et al. 2017: the edge at sigma_b^2 = 0.05 is sigma_w^2 ~ 1.76; 1 at 0
    assert diagram["edge_sigma_w2"] == pytest.approx([1.0, 1.76], abs=0.01)
    assert theory.depth_scales("tanh", np.sqrt(diagram["edge_sigma_w2"][1]), sb)[1] > 1000
