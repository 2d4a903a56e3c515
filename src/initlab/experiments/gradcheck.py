"""E8 `gradcheck`: back-propagation checked against finite differences for every activation x
loss, on a small network whose inputs keep away from ReLU kinks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from initlab.nn import Dense, Sequential, activations, gradcheck, losses

# each loss with the output activations it is checked with
OUTPUTS = {
    "binary_crossentropy": ("sigmoid", "linear"),
    "clipped_binary_crossentropy": ("sigmoid",),
    "softmax_crossentropy": ("softmax", "linear"),
    "mean_squared_error": ("linear", "tanh", "softmax"),
}
HIDDEN = [a for a in activations.available() if a != "softmax"]


def _targets(loss: str, units: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if "binary" in loss:
        return rng.integers(0, 2, n)
    if loss == "softmax_crossentropy":
        return rng.integers(0, units, n)
    return rng.standard_normal((n, units))


def _parse_layers(layers: str) -> list[int]:
    try:
        widths = [int(w) for w in layers.split(",")]
    except ValueError:
        message = f"layers must be comma-separated ints like 4,8,6; got layers={layers!r}"
        raise ValueError(message) from None
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"layers needs an input width and at least one hidden width, all >= 1;"
                         f" got layers={layers!r}")
    return widths


def check_all(activation: str = "all", loss: str = "all", *, layers: str = "4,8,6",
              samples: int = 16, tol: float = 1e-6, seed: int = 0) -> Iterator[dict]:
    """Gradient-check a network for each (hidden activation, loss, output activation)."""
    widths = _parse_layers(layers)
    hidden = HIDDEN if activation == "all" else [activations.get(activation).name]
    chosen = list(OUTPUTS) if loss == "all" else [losses.get(loss).name]
    rng = np.random.default_rng(seed)
    for act in hidden:
        for name in chosen:
            for out_act in OUTPUTS[name]:
                units = 1 if "binary" in name else 3
                model = Sequential(
                    [Dense(w, act, init="glorot_normal", bias_init={"name": "normal", "std": 0.1})
                     for w in widths[1:]] + [Dense(units, out_act, init="glorot_normal")])
                loss_spec = {"name": name, "eps": 1e-7} if name.startswith("clipped") else name
                model.compile(loss_spec).build(widths[0], rng=rng)
                X = rng.standard_normal((samples, widths[0]))
                y = _targets(name, units, samples, rng)
                result = gradcheck(model, X, y, tol=tol, raise_on_failure=False)
                yield {"activation": act, "loss": name, "output": out_act,
                       "error": max(result.errors.values()), "ok": result.ok}
