"""Model-level schemes: initializations that need the model or data, and so change a model.

Each acts on every replica of a :class:`~initlab.nn.Sequential` in place and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import hadamard

from initlab import initializers
from initlab._validate import check_positive
from initlab.nn import Dense, Residual, Sequential


@dataclass
class LSUVResult:
    """Per layer: whether each replica converged, the iterations used, the final std."""

    converged: np.ndarray  # (layers, R) bool
    iterations: np.ndarray  # (layers,) int: iterations the slowest replica needed
    std: np.ndarray  # (layers, R): the pre-activation std after the scheme

    @property
    def ok(self) -> bool:
        return bool(np.all(self.converged))

    def __str__(self) -> str:
        lines = [f"layer {i}: std {np.mean(s):.4f} (replicas {np.min(s):.4f}..{np.max(s):.4f}), "
                 f"{n} iteration(s), {'converged' if np.all(c) else 'NOT converged'}"
                 for i, (s, n, c) in enumerate(zip(self.std, self.iterations, self.converged,
                                                   strict=True))]
        return "\n".join(lines)


def lsuv(model: Sequential, X: Any, tol: float = 0.1, max_iter: int = 10, *,
         target: float = 1.0, center: bool = False, orthogonal: bool = True) -> LSUVResult:
    """Layer-sequential unit-variance init (Mishkin & Matas 2016). CHANGES ``model`` in place.

    Weights are first drawn orthogonal (from each replica's own stream); then, layer by layer
    from the input, each replica's weights are divided by the std of the layer's pre-activation
    x W + b on the probe batch ``X`` until that std is within ``tol`` of ``target``, at most
    ``max_iter`` times. With ``center=True`` the bias is also shifted so the pre-activation has
    mean 0. (The pre-activation, as PyTorch implementations measure a Linear's output; the
    paper's Caffe blobs hold the same for a layer followed by its in-place nonlinearity.)

    ``model`` must be built, ``model.build(X.shape[1], rng=seed)``: LSUV starts from weights
    drawn from the model's own streams, so it does not build an unbuilt model from X's width
    the way ``fit`` does, which would leave that seed to fresh entropy.
    """
    check_positive("tol", tol)
    check_positive("target", target)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got max_iter={max_iter!r}")
    if not model.replicas:
        shape = np.shape(X)
        if len(shape) in (2, 3):
            replicas = f", replicas={shape[0]}" if len(shape) == 3 else ""
            call = f"model.build({shape[-1]}, rng=...{replicas}) for X's {shape[-1]} features"
        else:
            call = "model.build(X.shape[1], rng=...)"
        raise ValueError(f"build the model before LSUV: {call} (LSUV starts from weights drawn "
                         f"from the model's own streams, so their seed is yours to choose)")
    for i, layer in enumerate(model.layers):
        if layer.sublayers or layer.weight_key is None:
            raise ValueError(f"LSUV scales layers with a weight of their own; got layer {i}: "
                             f"{layer!r}")
    X, _ = model.prepare(X)
    if X.shape[-2] < 2:
        raise ValueError(f"LSUV needs a probe batch of at least 2 samples; got {X.shape[-2]}")
    if orthogonal:
        ortho = initializers.get("orthogonal")
        for r, gen in enumerate(model.rngs):
            for layer in model.layers:
                layer.init_replica(r, gen, ortho)
    n_layers, R = len(model.layers), model.replicas
    converged = np.zeros((n_layers, R), dtype=bool)
    iterations = np.zeros(n_layers, dtype=int)
    stds = np.zeros((n_layers, R))
    a = X
    for i, layer in enumerate(model.layers):
        W = layer.params[str(layer.weight_key)]
        b = None if layer.bias_key is None else layer.params[layer.bias_key]
        for step in range(max_iter + 1):
            z = layer.forward(a, activate=False).z
            std = np.std(z.reshape(R, -1), axis=1, dtype=np.float64)
            done = np.abs(std - target) < tol
            if np.all(done) or step == max_iter:
                break
            scale = np.where(done | (std == 0), 1.0, target / np.where(std == 0, 1.0, std))
            W *= scale.astype(W.dtype)[:, None, None]
            if center and b is not None:
                b -= np.mean(z, axis=(1, 2), dtype=np.float64).astype(b.dtype)[:, None, None]
        converged[i], iterations[i], stds[i] = done, step, std
        a = layer.forward(a).out  # the input of the next layer, with the scaled weights
    return LSUVResult(converged, iterations, stds)


def zero_init(model: Sequential) -> Sequential:
    """ZerO initialization (Zhao et al. 2022, Algorithm 1): deterministic, no randomness.
    CHANGES ``model`` in place: every replica gets the same weights, biases 0.

    With P = fan_out and Q = fan_in: P = Q gives the identity, P < Q the partial identity
    (ones on the main diagonal), P > Q a Hadamard matrix of size 2^m, m = ceil(log2 P),
    cut to its first P x Q block and scaled by c = 2^(-(m-1)/2). Weights are stored
    (fan_in, fan_out), the transpose of the paper's P x Q.
    """
    if not model.replicas:
        raise ValueError("build the model before ZerO (model.build(input_dim))")
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            raise ValueError(f"ZerO is defined for dense layers; got layer {i}: {layer!r}")
    for layer in model.layers:
        layer.params["W"][...] = zero_matrix(int(layer.fan_in or 0), layer.units)
        if layer.bias_key is not None:
            layer.params[layer.bias_key][...] = 0.0
    return model


def zero_matrix(fan_in: int, fan_out: int) -> np.ndarray:
    """The ZerO weight of a (fan_in, fan_out) dense layer (see :func:`zero_init`)."""
    if fan_out <= fan_in:
        return np.eye(fan_in, fan_out)
    m = math.ceil(math.log2(fan_out))
    c = 2.0 ** (-(m - 1) / 2)
    return c * hadamard(2**m)[:fan_out, :fan_in].T.astype(float)


def fixup(model: Sequential) -> Sequential:
    """Fixup (Zhang, Dauphin & Ma 2019) for a network of Residual blocks. CHANGES ``model`` in
    place: in each of the L blocks, every branch layer but the last is drawn He normal (from
    each replica's stream) and scaled by L^(-1/(2m-2)) for a branch of m layers; the last
    branch layer is 0, so every block starts as the identity map; scalar multipliers are 1 and
    biases 0. The output layer (the model's last layer, when it is not a block) is set to 0
    too, as the paper's classification layer; any layer between the blocks and it keeps its
    weights, so that a head of several layers can still learn.
    """
    blocks = [layer for layer in model.layers if isinstance(layer, Residual)]
    if not blocks:
        raise ValueError("fixup needs a model with Residual blocks")
    for block in blocks:
        for layer in block.branch:
            if layer.weight_key is None or layer.sublayers:
                raise ValueError(f"fixup draws the weights of a branch of weight layers; got "
                                 f"{layer!r} in {block!r}")
    if not model.replicas:
        raise ValueError("build the model before Fixup (model.build(input_dim))")
    L = len(blocks)
    he = initializers.get("he_normal")
    for block in blocks:
        m = len(block.branch)
        shrink = L ** (-1.0 / (2 * m - 2)) if m > 1 else 0.0
        for layer in block.branch[:-1]:
            W = layer.params[str(layer.weight_key)]
            for r, gen in enumerate(model.rngs):
                W[r] = shrink * he(W.shape[1:], rng=gen)
        last = block.branch[-1]
        last.params[str(last.weight_key)][...] = 0.0
        for layer in block.branch:
            if layer.bias_key is not None:
                layer.params[layer.bias_key][...] = 0.0
        block.scale[...] = 1.0
    if not isinstance(model.layers[-1], Residual):
        for value in model.layers[-1].params.values():
            value[...] = 0.0
    return model


def self_normalizing(model: Sequential) -> Sequential:
    """The self-normalizing pair (Klambauer et al. 2017): SELU units with LeCun normal weights,
    N(0, 1 / fan_in), and zero biases, which make mean 0 and variance 1 the stable fixed point
    of every layer's activations. CHANGES ``model`` in place: redraws every layer's weights from
    each replica's stream. Every layer but the output layer must be a SELU Dense layer.
    """
    if not model.replicas:
        raise ValueError("build the model before self_normalizing (model.build(input_dim))")
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            raise ValueError(f"self_normalizing handles Dense layers only; got layer {i}: "
                             f"{layer!r}")
        if i < len(model.layers) - 1 and layer.activation.name != "selu":
            raise ValueError(f"self_normalizing needs SELU hidden layers; got layer {i} with "
                             f"activation={layer.activation!r}")
    lecun = initializers.get("lecun_normal")
    for r, gen in enumerate(model.rngs):
        for layer in model.layers:
            layer.params["W"][r] = lecun(layer.params["W"].shape[1:], rng=gen)
            if layer.bias_key is not None:
                layer.params[layer.bias_key][r] = 0.0
    return model
