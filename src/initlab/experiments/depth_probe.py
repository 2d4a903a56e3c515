"""The E4 `depth` card's measurement machinery: one stack's batched forward and backward pass
of every (variant, seed) with its per-layer statistics (``Stack``, ``probe``), and the He ReLU
stacks of the finite-width random walk (``probe_walk``). The card, its variant tables and its
claims are in ``depth``; its tables, figures and notes in ``depth_report``."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from initlab import data
from initlab.experiments import shared_draws
from initlab.experiments.card import Run
from initlab.experiments.relu_walk import Walk, simulate_walk
from initlab.nn import Dense, Sequential

if TYPE_CHECKING:
    from initlab.experiments.depth import Settings


@dataclass
class Stack:
    """One stack's batched forward and backward pass of every (variant, seed). ``stats``, per
    replica (in ``labels`` order), computed in float64 from the float32 values (float32 would
    round the squares of subnormal values to 0): of each layer (R, layers) the output's
    "mean" and "std", whether it is all "finite" or all exactly "zero", the std of the
    pre-activation z = x W ("pre_std", LSUV's replicas only, nan elsewhere), the std of ∂L/∂z
    ("grad"); and (R,) the "input_std" and the mean "cosine" between the batch's samples after
    the last layer."""

    labels: list[tuple[str, int]]
    stats: dict[str, np.ndarray]
    q0: float  # the mean square of the input, every seed's batch once
    fan_in: int
    schemes: dict[str, Any]  # what each variant's scheme returned
    identical: dict[str, bool]  # per variant, whether its seeds got the same weights


def probe(run: Run, names: Sequence[str], activation: str, split: data.Split, *,
          start: Mapping[str, Mapping[int, list[np.ndarray]]] | None = None,
          keep: Collection[str] = (), pre_std: str
          ) -> tuple[Stack, dict[str, dict[int, list[np.ndarray]]]]:
    """Build the variants ``names`` of one stack, each seed's replica on its own batch, apply
    their schemes and record one forward and backward pass.

    ``start[name][seed]``: the per-layer weights a variant's replica gets instead of drawing
    them; ``keep``: the variants whose drawn weights are returned, as such a ``start``;
    ``pre_std``: the variant whose pre-activation std is recomputed (LSUV's)."""
    cfg: Settings = run.cfg
    start = start or {}
    labels = run.labels(names)
    X, y, each_seed = _batches(split, labels, cfg.batch)
    model = _model(activation, cfg, split.n_classes)
    sweep = run.sweep(names)
    # a replica given its start is built as zeros, which draws nothing
    sweep["variants"] = ["zeros" if name in start else init
                         for (name, _), init in zip(labels, sweep["variants"], strict=True)]
    # orthogonal's QRs: threaded, they crawl when a core is busy; the variants of a seed draw
    # its N(0, 1) matrices once (shared_draws: the weights build draws, exactly)
    with threadpool_limits(1):
        shared_draws.build(model, X.shape[-1], dtype=np.float32, **sweep)
    for r, (name, seed) in enumerate(labels):
        if name in start:
            for layer, W in zip(model.layers, start[name][seed], strict=True):
                layer.params["W"][r] = W
    kept = {name: {seed: [layer.params["W"][r].copy() for layer in model.layers]
                   for r, (n, seed) in enumerate(labels) if n == name} for name in keep}
    done = _apply_schemes(run, model, X)
    identical = {name: _identical(model, model.select(variant=name)) for name in names}
    stats = _record(model, X, y, cfg.layers, pre=model.select(variant=pre_std))
    stats["input_std"] = X.astype(np.float64).std(axis=(1, 2))
    return Stack(labels, stats, float(np.mean(each_seed.astype(np.float64) ** 2)), X.shape[-1],
                 done, identical), kept


def probe_walk(run: Run, split: data.Split, *, simulated: int, simulation_seed: int
               ) -> Walk:
    """Per width, ``walk_draws`` bias-free ReLU stacks per seed with the "relu kaiming" init,
    from child 1 of the seed's stream (child 0 draws its batch), network k fed image k of the
    seed's batch (cycling: the ratio does not depend on the input); and ``simulated`` walks
    drawn directly per width, from one stream seeded ``simulation_seed``."""
    cfg: Settings = run.cfg
    seeds = run.seeds_of("relu kaiming")
    batches = _batches(split, [("", s) for s in seeds], cfg.batch)[2].astype(np.float64)
    simulation, net, sim = np.random.default_rng(simulation_seed), [], []
    for width, draws in zip(cfg.walk_widths, cfg.walk_draws, strict=True):
        streams = [np.random.SeedSequence(s, spawn_key=(1, width, k))
                   for s in seeds for k in range(draws)]
        model = Sequential([Dense(width, "relu", use_bias=False) for _ in range(cfg.layers)])
        model.build(split.X_train.shape[1], rng=streams, dtype=np.float32,
                    variants=[run.variants["relu kaiming"].init] * len(streams))
        x0 = batches[:, np.arange(draws) % cfg.batch].reshape(len(streams), -1)
        model.forward(model.prepare(x0[:, None])[0], hooks=False)
        squares = np.stack([np.sum(t.out[:, 0].astype(np.float64) ** 2, axis=1)
                            for t in model.traces], axis=1)
        with np.errstate(divide="ignore"):  # a layer whose units are all dead: −inf
            net.append(np.log(squares * x0.shape[1] / width / np.sum(x0**2, axis=1)[:, None]))
        sim.append(simulate_walk(width, cfg.layers, simulated, rng=simulation))
    return Walk(tuple(cfg.walk_widths), tuple(net), tuple(sim))


def _batches(split: data.Split, labels: list[tuple[str, int]], size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each replica's float32 batch and its labels, and every seed's batch once: the variants
    of a seed share its batch, drawn from a child of the seed's stream (so it is not the
    weights' own numbers)."""
    batch = {s: np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
             .choice(len(split.X_train), size, replace=False)
             for s in dict.fromkeys(s for _, s in labels)}
    X = np.stack([split.X_train[batch[s]] for _, s in labels]).astype(np.float32)
    y = np.stack([split.y_train[batch[s]] for _, s in labels])
    return X, y, np.stack([split.X_train[b] for b in batch.values()]).astype(np.float32)


def _model(activation: str, cfg: Settings, classes: int) -> Sequential:
    layers = [Dense(cfg.width, activation, use_bias=False) for _ in range(cfg.layers)]
    # a linear 10-unit head gives the backward pass a loss: softmax cross-entropy on the labels
    return Sequential(layers + [Dense(classes, use_bias=False)]).compile("softmax_crossentropy")


def _apply_schemes(run: Run, model: Sequential, X: np.ndarray) -> dict[str, Any]:
    """``Run.apply_schemes``, keeping what each scheme returns (LSUV: its iterations)."""
    done = {}
    for name in dict.fromkeys(model.coordinate("variant")):
        scheme, index = run.variants[name].scheme, model.select(variant=name)
        if scheme is not None:
            sub = model.take(index)
            done[name] = scheme(sub, X[index])
            model.put(index, sub)
    return done


def _identical(model: Sequential, index: list[int]) -> bool:
    return all(np.array_equal(layer.params["W"][index[0]], layer.params["W"][r])
               for layer in model.layers for r in index[1:])


def _record(model: Sequential, X: np.ndarray, y: np.ndarray, depth: int, pre: list[int]
            ) -> dict[str, np.ndarray]:
    """The per-layer statistics of ``Stack.stats`` from one forward and backward pass (the
    head left out); ``pre``: the replicas whose pre-activation std is recomputed from each
    layer's input and weights."""
    stats: dict[str, np.ndarray] = {k: np.zeros((len(X), depth))
                                    for k in ("mean", "std", "finite", "zero", "grad")}
    stats["pre_std"] = np.full((len(X), depth), np.nan)
    stats["cosine"] = np.zeros(len(X))
    layer_input = [X[pre]]

    def forward(i, layer, trace):
        a = trace.out
        if i < depth:
            a64 = a.astype(np.float64)
            stats["mean"][:, i] = a64.mean(axis=(1, 2))
            stats["std"][:, i] = a64.std(axis=(1, 2))
            stats["finite"][:, i] = np.all(np.isfinite(a), axis=(1, 2))
            stats["zero"][:, i] = np.all(a == 0, axis=(1, 2))
            if pre:
                z = layer_input[0] @ layer.params["W"][pre]
                stats["pre_std"][pre, i] = z.astype(np.float64).std(axis=(1, 2))
                layer_input[0] = a[pre]
        if i == depth - 1:
            stats["cosine"][:] = _mean_cosine(a.astype(np.float64))

    def backward(i, layer, result):
        if i < depth:
            stats["grad"][:, i] = result.dz.astype(np.float64).std(axis=(1, 2))

    with np.errstate(all="ignore"), model.register_hook("forward", forward), \
            model.register_hook("backward", backward):
        model.compute_gradients(X, y, param_grads=False)  # the hooks need only dL/dz
    return stats


def _mean_cosine(a: np.ndarray) -> np.ndarray:
    """Per replica, the mean cosine similarity between different samples of (R, n, k) outputs."""
    unit = a / np.linalg.norm(a, axis=2, keepdims=True)
    gram = unit @ np.swapaxes(unit, 1, 2)
    n = a.shape[1]
    return (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (n * (n - 1))
