"""E9 normalization: the helpers its claims rest on, on inputs whose answer is known."""

import numpy as np

from initlab.experiments import normalization


def test_per_block_growth_recovers_a_geometric_gradient():
    blocks = np.arange(20)
    grad = np.stack([3.0 * 1.25 ** (19 - blocks), 0.5 * 0.9 ** (19 - blocks)])
    np.testing.assert_allclose(normalization._per_block(grad), [1.25, 0.9], rtol=1e-12)


def test_relative_gap_is_zero_for_equal_outputs_and_sees_a_scaled_one():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 5, 4))
    np.testing.assert_array_equal(normalization._relative_gap(a, a.copy()), [0.0, 0.0])
    gap = normalization._relative_gap(a * (1 + 1e-3), a)
    assert np.all((gap > 0.5e-3) & (gap < 1.5e-3))
