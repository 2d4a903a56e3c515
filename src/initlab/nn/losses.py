"""Losses: per-replica mean over samples (and outputs), with the gradient beside the value.

A loss that ``fuses`` an output activation takes the last layer's pre-activation (logits) and
computes value and gradient stably from it: binary cross-entropy from logits has gradient
``(sigmoid(z) - y) / n`` however large ``z`` gets. ``clipped_binary_crossentropy`` is the sources'
form instead: it takes the sigmoid's probability, clips it to [eps, 1 - eps] and back-propagates
through the sigmoid, so a saturated output (p rounded to 0 or 1) passes no gradient.

Shapes: outputs are (R, n, k); targets (R or 1, n, k), prepared by :meth:`Loss.targets`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special

from initlab._validate import from_registry


class Loss(abc.ABC):
    name = "loss"
    fuses: str | None = None  # output activation whose logits the loss takes
    params: dict[str, float] = {}

    @abc.abstractmethod
    def value(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mean loss per replica, shape (R,)."""

    @abc.abstractmethod
    def grad(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d(mean loss) / d(out), the shape of out."""

    def targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """Targets as a float array (..., n, k) matching outputs of width k."""
        y = np.asarray(y, dtype=float)
        if n_outputs == 1 and (y.ndim == 1 or y.shape[-1] != 1):
            y = y[..., None]
        if y.shape[-1] != n_outputs:
            raise ValueError(f"y must have {n_outputs} column(s) for a model with "
                             f"{n_outputs} output(s); got y with shape {y.shape}")
        return y

    def accuracy(self, out: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Fraction of correct predictions per replica, or None where it has no meaning."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


def _mean_factor(out: np.ndarray) -> float:
    return 1.0 / (out.shape[-2] * out.shape[-1])


class BinaryCrossEntropy(Loss):
    """-mean(y log p + (1 - y) log(1 - p)), p = sigmoid(z), computed from the logits z as
    mean(softplus(z) - y z)."""

    name = "binary_crossentropy"
    fuses: str | None = "sigmoid"

    def value(self, out, y):
        return np.mean(np.logaddexp(0.0, out) - y * out, axis=(-2, -1))

    def grad(self, out, y):
        g = special.expit(out)
        g -= y
        g *= _mean_factor(out)
        return g

    def targets(self, y, n_outputs):
        y = super().targets(y, n_outputs)
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise ValueError(f"{self.name} needs labels in {{0, 1}}; got y containing "
                             f"{np.unique(y[bad])[:5].tolist()}")
        return y

    def accuracy(self, out, y):
        # the sign of the logit decides, which is p > 0.5
        return np.mean((out > 0) == (y > 0.5), axis=(-2, -1))


class ClippedBinaryCrossEntropy(BinaryCrossEntropy):
    """The sources' form: cross-entropy of the sigmoid's probability p clipped to
    [eps, 1 - eps], back-propagated through p (gradient 0 where p saturates)."""

    name = "clipped_binary_crossentropy"
    fuses = None

    def __init__(self, eps: float = 1e-15):
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5); got eps={eps!r}")
        self.params = {"eps": eps}
        self.eps = eps

    def value(self, out, y):
        p = np.clip(out, self.eps, 1.0 - self.eps)
        return -np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p), axis=(-2, -1))

    def grad(self, out, y):
        p = np.clip(out, self.eps, 1.0 - self.eps)
        # dL/dp = (p - y) / (p (1 - p)), at the clipped p, as a hand-written loss does
        return (p - y) / (p * (1.0 - p)) * _mean_factor(out)

    def accuracy(self, out, y):
        return np.mean((out > 0.5) == (y > 0.5), axis=(-2, -1))


class SoftmaxCrossEntropy(Loss):
    """-mean(log softmax(z)[label]), from the logits; labels as class ids or one-hot rows."""

    name = "softmax_crossentropy"
    fuses = "softmax"

    def value(self, out, y):
        return np.mean(special.logsumexp(out, axis=-1) - np.sum(y * out, axis=-1), axis=-1)

    def grad(self, out, y):
        g = special.softmax(out, axis=-1)
        g -= y
        g *= 1.0 / out.shape[-2]
        return g

    def targets(self, y, n_outputs):
        y = np.asarray(y)
        if y.ndim >= 1 and y.shape[-1] == n_outputs and y.ndim >= 2 and n_outputs > 1 \
                and np.issubdtype(y.dtype, np.floating):
            return y.astype(float)  # one-hot or soft labels
        labels = y.astype(np.int64)
        if not np.array_equal(labels, y) or labels.min(initial=0) < 0 \
                or labels.max(initial=0) >= n_outputs:
            raise ValueError(f"{self.name} needs integer class labels in [0, {n_outputs}) or "
                             f"one-hot rows; got y with values {np.unique(y)[:5].tolist()}")
        return np.eye(n_outputs)[labels]

    def accuracy(self, out, y):
        return np.mean(np.argmax(out, axis=-1) == np.argmax(y, axis=-1), axis=-1)


class MeanSquaredError(Loss):
    """mean((a - y)^2) over samples and outputs."""

    name = "mean_squared_error"

    def value(self, out, y):
        return np.mean((out - y) ** 2, axis=(-2, -1))

    def grad(self, out, y):
        return 2.0 * (out - y) * _mean_factor(out)


_REGISTRY: dict[str, type[Loss]] = {
    cls.name: cls for cls in (BinaryCrossEntropy, ClippedBinaryCrossEntropy,
                              SoftmaxCrossEntropy, MeanSquaredError)
}
ALIASES = {
    "bce": "binary_crossentropy",
    "crossentropy": "binary_crossentropy",
    "binary_cross_entropy": "binary_crossentropy",
    "categorical_crossentropy": "softmax_crossentropy",
    "sparse_categorical_crossentropy": "softmax_crossentropy",
    "cross_entropy": "softmax_crossentropy",
    "mse": "mean_squared_error",
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(spec: str | Mapping[str, Any] | Loss) -> Loss:
    """A loss from a name, a ``{"name": ..., **params}`` mapping or an instance."""
    if isinstance(spec, Loss):
        return spec
    return from_registry(spec, _REGISTRY, ALIASES, "loss")
