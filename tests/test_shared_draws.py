"""experiments.shared_draws.build: the weights Sequential.build draws, array for array, with
each stream's standard normals drawn once."""

from __future__ import annotations

import numpy as np
import pytest

from initlab.experiments import shared_draws
from initlab.nn import Dense, Sequential

# normal-family inits replay one draw; the others (uniform, truncated, orthogonal on a
# non-square first layer, zeros) draw from their own stream
INITS = [{"name": "normal", "std": 1.0}, {"name": "normal", "std": 0.01}, "lecun_normal",
         "he_normal", "orthogonal", "glorot_uniform", "truncated_normal", "zeros",
         {"name": "normal", "mean": 0.5, "std": 2.0}]


def _model(bias=False):
    return Sequential([Dense(12, "relu", use_bias=bias), Dense(12, "relu", use_bias=bias),
                       Dense(3, use_bias=bias)])


def _args(seeds=(0, 1)):
    labels = [(init, seed) for init in INITS for seed in seeds]
    return {"rng": [np.random.SeedSequence(seed) for _, seed in labels],
            "variants": [init for init, _ in labels],
            "coords": [{"variant": str(init), "seed": seed} for init, seed in labels]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_weights_and_streams_are_those_build_draws(dtype):
    reference = _model().build(7, dtype=dtype, **_args())
    shared = shared_draws.build(_model(), 7, dtype=dtype, **_args())
    for a, b in zip(reference.layers, shared.layers, strict=True):
        np.testing.assert_array_equal(a.params["W"], b.params["W"])
        assert a.inits == b.inits
    for a, b in zip(reference.rngs, shared.rngs, strict=True):  # the streams where build left them
        assert a.bit_generator.state == b.bit_generator.state
    assert shared.coords == reference.coords


def test_the_replay_is_used_and_refuses_any_other_draw(monkeypatch):
    calls = []
    real = shared_draws._Replay.standard_normal

    def counted(self, *args, **kwargs):
        if object.__getattribute__(self, "_draw").any():  # a real draw, not the zeros probe
            calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(shared_draws._Replay, "standard_normal", counted)
    shared_draws.build(_model(), 7, **_args())
    # the four normal-family inits and the shifted normal, 2 seeds, 3 layers: each replayed
    assert len(calls) == 5 * 2 * 3
    replay = shared_draws._Replay(np.zeros((2, 3)))
    with pytest.raises(shared_draws._NotReplayable):
        replay.uniform(size=(2, 3))
    with pytest.raises(shared_draws._NotReplayable):
        replay.standard_normal((3, 2))
    replay.standard_normal((2, 3))
    with pytest.raises(shared_draws._NotReplayable):
        replay.standard_normal((2, 3))  # one draw only


def test_models_with_biases_build_as_usual():
    reference = _model(bias=True).build(7, **_args())
    shared = shared_draws.build(_model(bias=True), 7, **_args())
    for a, b in zip(reference.parameters(), shared.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)
