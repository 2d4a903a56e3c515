"""Gradient check: back-propagation against central finite differences, in float64.

Every replica is checked at once: nudging entry j of a parameter in all replicas moves each
replica's loss only through its own copy, so one pair of forward passes gives R differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from initlab.nn.model import Sequential


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


@dataclass
class GradcheckResult:
    """``errors[(layer, param)]``: the worst relative error over replicas,
    ||analytic - numeric|| / (||analytic|| + ||numeric||)."""

    errors: dict[tuple[int, str], float]
    tol: float
    layers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(err < self.tol for err in self.errors.values())

    def per_layer(self) -> dict[int, float]:
        """The worst relative error of each layer."""
        worst: dict[int, float] = {}
        for (layer, _), err in self.errors.items():
            worst[layer] = max(worst.get(layer, 0.0), err)
        return worst

    def __str__(self) -> str:
        lines = [f"layer {i} {self.layers[i] if i < len(self.layers) else ''}: "
                 f"max relative error {err:.2e}" for i, err in self.per_layer().items()]
        return "\n".join(lines + [f"{'ok' if self.ok else 'FAILED'} (tol {self.tol:g})"])


def gradcheck(model: Sequential, X: Any, y: Any, *, eps: float = 1e-6, tol: float = 1e-6,
              raise_on_failure: bool = True) -> GradcheckResult:
    """Compare every parameter's analytic gradient with central differences (step ``eps``).

    Returns the relative error of each (layer, parameter); raises GradcheckError listing the
    failures when one exceeds ``tol`` (unless ``raise_on_failure=False``). Keep inputs away
    from kinks (ReLU at 0), where no finite difference is meaningful.
    """
    if model.replicas and model.dtype != np.float64:
        raise ValueError(f"gradcheck needs a float64 model; got dtype={model.dtype}")
    model.compute_gradients(X, y)
    analytic = [{k: g.copy() for k, g in grads.items()} for grads in model.grads]
    Xp, yp = model.prepare(X, y)
    assert yp is not None

    def loss() -> np.ndarray:
        return model.cost(Xp, yp, hooks=False)

    errors = {}
    with model.frozen_buffers():  # the perturbed passes must not move running statistics
        for i, layer in enumerate(model.layers):
            for name, param in layer.params.items():
                errors[(i, name)] = _relative_error(analytic[i][name],
                                                    _central_differences(param, loss, eps))
    result = GradcheckResult(errors, tol, [repr(layer) for layer in model.layers])
    if raise_on_failure and not result.ok:
        bad = {k: f"{v:.2e}" for k, v in errors.items() if v >= tol}
        raise GradcheckError(f"analytic gradients disagree with finite differences "
                             f"(tol {tol:g}) at (layer, param): {bad}")
    return result


def _central_differences(param: np.ndarray, loss: Callable[[], np.ndarray],
                         eps: float) -> np.ndarray:
    """d loss / d param by central differences, entry by entry (every replica at once)."""
    numeric = np.zeros_like(param)
    for idx in np.ndindex(param.shape[1:]):
        at = (slice(None), *idx)
        original = param[at].copy()
        param[at] = original + eps
        plus = loss()
        param[at] = original - eps
        minus = loss()
        param[at] = original
        numeric[at] = (plus - minus) / (2 * eps)
    return numeric


def _relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    axes = tuple(range(1, analytic.ndim))
    diff = np.sqrt(np.sum((analytic - numeric) ** 2, axis=axes))
    scale = np.sqrt(np.sum(analytic**2, axis=axes)) + np.sqrt(np.sum(numeric**2, axis=axes))
    return float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)))
