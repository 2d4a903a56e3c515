"""``Sequential.build`` for replicas that share a stream, drawing its normal numbers once.

A card that compares inits on the same seed gives every variant the seed's stream, so N(0, 1),
N(0, 1) x 0.01, LeCun and He weights of one seed are the same standard-normal matrices, scaled.
:func:`build` gives exactly the weights ``model.build`` gives (tested array for array), but
draws each layer's matrix once per stream and hands it to every replica of that stream whose
init uses the stream for that one ``standard_normal`` call of the layer's shape and nothing
else (it is given a :class:`_Replay` of the draw, which refuses any other use); any other
replica draws from its own stream, as ``build`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from initlab import initializers
from initlab.nn import Dense, Sequential


class _NotReplayable(Exception):
    """The init used its generator otherwise than for one standard-normal draw of its shape."""


class _Replay(np.random.Generator):
    """A Generator that serves one recorded ``standard_normal`` draw and refuses anything
    else (another draw, another shape or dtype, any other method)."""

    def __init__(self, draw: np.ndarray):
        super().__init__(np.random.PCG64(0))  # never drawn from
        self._draw, self._used = draw, False

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__") or name in ("standard_normal", "_draw", "_used"):
            return object.__getattribute__(self, name)
        raise _NotReplayable(name)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64,  # type: ignore[override]
                        out: Any = None) -> np.ndarray:
        if self._used or out is not None or np.dtype(dtype) != np.float64 or \
                tuple(np.atleast_1d(size)) != self._draw.shape:
            raise _NotReplayable("standard_normal")
        self._used = True
        return self._draw.copy()


def build(model: Sequential, input_dim: int, *, rng: Sequence[np.random.SeedSequence],
          variants: Sequence[Any], dtype: Any = np.float64, **build_args: Any) -> Sequential:
    """``model.build(input_dim, rng=rng, variants=variants, dtype=dtype, **build_args)``,
    with the weights of replicas of equal streams drawn once per layer (see the module
    docstring). Only for stacks of bias-free Dense layers, SeedSequence streams and one init
    spec per replica; anything else builds as usual."""
    if not (all(type(layer) is Dense and layer.bias_key is None for layer in model.layers)
            and all(isinstance(s, np.random.SeedSequence) for s in rng)
            and all(isinstance(v, str | dict | initializers.Initializer) for v in variants)):
        return model.build(input_dim, rng=list(rng), variants=list(variants), dtype=dtype,
                           **build_args)
    inits = [initializers.get(v) for v in variants]
    model.build(input_dim, rng=list(rng), variants=["zeros"] * len(inits), dtype=dtype,
                **build_args)
    groups: dict[tuple, list[int]] = {}
    for r, stream in enumerate(rng):
        groups.setdefault((stream.entropy, tuple(stream.spawn_key)), []).append(r)
    for replicas in groups.values():
        replay = [r for r in replicas if _replays(inits[r], model.layers[0])]
        if len(replay) < 2:
            replay = []
        for r in set(replicas) - set(replay):
            _draw_own(model, r, inits[r])
        if replay:
            _draw_shared(model, replay, inits, rng)
    return model


def _replays(init: Any, layer: Any) -> bool:
    """Whether ``init`` draws layer's weights by one standard-normal draw of its shape."""
    shape = layer.params["W"].shape[1:]
    probe = _Replay(np.zeros(shape))
    try:
        init(shape, rng=probe, dtype=layer.params["W"].dtype)
    except _NotReplayable:
        return False
    return bool(object.__getattribute__(probe, "_used"))


def _draw_own(model: Sequential, r: int, init: Any) -> None:
    """Replica r's weights from its own stream, as ``build`` draws them."""
    for layer in model.layers:
        layer.init_replica(r, model.rngs[r], init)


def _draw_shared(model: Sequential, replicas: list[int], inits: list[Any],
                 streams: Sequence[np.random.SeedSequence]) -> None:
    """The replicas of one stream: each layer's draw made once (from the first replica's
    generator) and replayed to each; a replica whose init stops replaying draws its own."""
    source, live = model.rngs[replicas[0]], list(replicas)
    for layer in model.layers:
        W = layer.params["W"]
        draw = source.standard_normal(W.shape[1:])
        for r in list(live):
            try:
                W[r] = inits[r](W.shape[1:], rng=_Replay(draw), dtype=W.dtype)
                layer.inits[r] = inits[r]
            except _NotReplayable:
                live.remove(r)
                model.rngs[r] = np.random.default_rng(streams[r])  # from its start
                _draw_own(model, r, inits[r])
    for r in live:  # each replica's stream ends where its own draws would have left it
        if model.rngs[r] is not source:
            model.rngs[r].bit_generator.state = source.bit_generator.state
