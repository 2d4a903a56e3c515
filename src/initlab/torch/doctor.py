"""``initlab doctor``: a read-only audit of a PyTorch model's initialization.

For every Linear / convolution layer (:func:`initlab.torch.layers`) it says which
``torch.nn.init`` scheme the weight looks drawn from (a KS test against each candidate
distribution, its std computed from the fans), what one forward and backward pass of an example
input does there (forward and backward gain, the probe's dead and saturated fractions), the
mean-field second-moment gain of the layer with the activation that follows it
(:func:`initlab.theory.variance_map`), the verdict of ``initlab inspect``
(:func:`initlab.inspect.verdict`) and, where the layer is mis-scaled, a fix as code to paste.

Nothing of the model changes: its parameters are not written, its buffers (BatchNorm running
statistics) are restored after the pass, the gradients come from ``torch.autograd.grad`` so no
``.grad`` is touched, and torch's random state is forked (Dropout).

    report = doctor(model, torch.randn(64, 3, 32, 32))
    report.summary, report.layers, print(report.fix)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab import theory
from initlab.inspect import verdict
from initlab.torch.layout import Layer, layers
from initlab.torch.probes import Probe

# a candidate scheme fits when its KS test gives at least this p-value (torch's own test_init
# uses 1e-4 for the same test)
P_FIT = 1e-4
KS_SAMPLE = 200_000  # at most this many weights go into a KS test (a fixed subsample)
ORTHO_TOL = 1e-4  # |W W^T / g^2 - I| of an orthogonal_ weight, float32 rounding included
# a layer whose mean-field second-moment gain is outside this band gets a fix even if healthy
MOMENT_BAND = (0.5, 2.0)
PROBLEMS = ("overflow", "exploding", "vanishing", "dead", "saturated")  # worst first
VERDICTS = (*PROBLEMS, "healthy")
GAINS = {"linear": 1.0, "relu": math.sqrt(2.0), "tanh": 5.0 / 3.0}  # torch.nn.init's table
# the gains a candidate is tried with: Glorot for linear and tanh, He for ReLU and linear (each
# extra gain adds near-ties: xavier tanh is within 4 % of He's fan_out ReLU at fan_in = 2 fan_out)
XAVIER_GAINS, KAIMING_GAINS = ("linear", "tanh"), ("relu", "linear")


@dataclass(frozen=True)
class Candidate:
    """A ``torch.nn.init`` call and the distribution it draws: uniform on [-a, a] with
    a = sqrt(3) std, or normal with that std (std from the weight's torch fans)."""

    code: str  # the call, e.g. 'kaiming_normal_(mode="fan_out", nonlinearity="relu")'
    distribution: str  # "uniform" or "normal"
    gain: float
    fan: str  # "fan_in", "fan_out" or "fan_avg"; xavier's std is gain * sqrt(2 / (in + out))

    def std(self, fan_in: int, fan_out: int) -> float:
        if self.fan == "fan_avg":  # Glorot & Bengio 2010, eq. 16
            return self.gain * math.sqrt(2.0 / (fan_in + fan_out))
        return self.gain / math.sqrt(fan_in if self.fan == "fan_in" else fan_out)  # He 2015


def _gain_arg(name: str) -> str:
    return "" if name == "linear" else f'gain=nn.init.calculate_gain("{name}")'


# PyTorch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)), gain sqrt(2 / (1 + 5)),
# so the bound gain * sqrt(3 / fan_in) is 1 / sqrt(fan_in) (torch/nn/modules/linear.py)
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("kaiming_uniform_(a=math.sqrt(5))", "uniform",
              math.sqrt(1.0 / 3.0), "fan_in"),
    *(Candidate(f"{kind}_({_gain_arg(g)})", dist, GAINS[g], "fan_avg")
      for kind, dist in (("xavier_uniform", "uniform"), ("xavier_normal", "normal"))
      for g in XAVIER_GAINS),
    *(Candidate(f'{kind}_(mode="{mode}", nonlinearity="{g}")', dist, GAINS[g], mode)
      for kind, dist in (("kaiming_uniform", "uniform"), ("kaiming_normal", "normal"))
      for mode in ("fan_in", "fan_out") for g in KAIMING_GAINS),
)


@dataclass(frozen=True)
class Recognition:
    """What a weight looks initialised with: ``code`` the ``torch.nn.init`` call (``unknown``
    when nothing fits), ``p_value`` of its KS test (None for the exact checks: constant,
    orthogonal), ``also`` the other candidates that fit as well."""

    code: str
    p_value: float | None = None
    also: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "p_value": self.p_value, "also": list(self.also)}


def torch_fans(weight: torch.Tensor) -> tuple[int, int]:
    """The fans ``torch.nn.init`` uses for this weight: (size(1), size(0)) x receptive field.
    (For a transposed convolution these are its fan_out and fan_in, swapped: torch's rule.)"""
    rf = math.prod(weight.shape[2:])
    return int(weight.shape[1]) * rf, int(weight.shape[0]) * rf


def _orthogonal_gain(w: np.ndarray) -> float | None:
    """The gain g if the rows (or columns, whichever are fewer) of w, flattened as
    ``orthogonal_`` flattens it, are orthonormal up to g; else None."""
    flat = w.reshape(w.shape[0], -1)
    if min(flat.shape) < 2 or max(flat.shape) > 8192:  # one row is orthogonal to nothing
        return None
    small = flat if flat.shape[0] <= flat.shape[1] else flat.T
    gram = small @ small.T
    g2 = float(np.mean(np.diag(gram)))
    if not g2 > 0:
        return None
    off = np.abs(gram / g2 - np.eye(len(gram))).max()
    return math.sqrt(g2) if off < ORTHO_TOL else None


def recognize(weight: torch.Tensor) -> Recognition:
    """Which ``torch.nn.init`` scheme ``weight`` looks drawn from: zeros / constant, orthogonal
    (exact checks), else the candidate of :data:`CANDIDATES` whose distribution fits best by a
    KS test (p >= :data:`P_FIT`; a uniform one must also hold every weight within its bound),
    else ``unknown``."""
    from scipy import stats  # imported here: scipy.stats costs a second at start-up

    w = weight.detach().double().cpu().numpy()
    if w.size == 0 or not np.all(np.isfinite(w)):
        return Recognition("unknown")
    if np.all(w == w.flat[0]):
        value = float(w.flat[0])
        return Recognition("zeros_()" if value == 0 else f"constant_({value:.4g})")
    gain = _orthogonal_gain(w)
    if gain is not None:
        return Recognition("orthogonal_()" if abs(gain - 1) < 1e-3 else
                           f"orthogonal_(gain={gain:.4g})")
    fan_in, fan_out = torch_fans(weight)
    sample = w.ravel()
    if sample.size > KS_SAMPLE:  # a fixed subsample: the audit draws nothing from user state
        sample = np.random.default_rng(0).choice(sample, KS_SAMPLE, replace=False)
    largest = float(np.abs(w).max())
    fits: list[tuple[float, str]] = []
    for cand in CANDIDATES:
        std = cand.std(fan_in, fan_out)
        if cand.distribution == "uniform":
            bound = math.sqrt(3.0) * std
            if largest > bound * (1 + 1e-5):  # float32 rounding of the bound
                continue
            dist = stats.uniform(loc=-bound, scale=2 * bound)
        else:
            dist = stats.norm(scale=std)
        p = float(stats.kstest(sample, dist.cdf).pvalue)
        if p >= P_FIT:
            fits.append((p, cand.code))
    if not fits:
        return Recognition("unknown")
    # stable: equal p-values (the same distribution, e.g. fan_in == fan_out) keep table order
    fits.sort(key=lambda f: -f[0])
    return Recognition(fits[0][1], fits[0][0], tuple(code for _, code in fits[1:]))


def attribute_path(model: nn.Module, name: str, root: str = "model") -> str:
    """A named_modules() name as Python code: 'layer3.0.conv1' -> 'model.layer3[0].conv1'."""
    code, module = root, model
    for part in name.split(".") if name else []:
        if isinstance(module, nn.ModuleDict) or not (part.isidentifier() or part.isdigit()):
            code += f"[{part!r}]" if isinstance(module, nn.ModuleDict) else \
                f".get_submodule({part!r})"
        elif part.isdigit() and isinstance(module, nn.Sequential | nn.ModuleList):
            code += f"[{part}]"
        elif part.isdigit():
            code += f".get_submodule({part!r})"
        else:
            code += f".{part}"
        module = module.get_submodule(part)
    return code


def _std(t: torch.Tensor | None) -> float:
    return math.nan if t is None else float(t.detach().double().std(correction=0))


def _describe(layer: Layer) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features} -> {layer.out_features})"
    kernel = "x".join(map(str, layer.kernel_size))
    return f"{type(layer).__name__}({layer.in_channels} -> {layer.out_channels}, k={kernel})"


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for item in out for t in _tensors(item)]
    return []


def _moment_gain(activation: str | None, sigma_w: float, q: float) -> float:
    """Mean-field factor of the second moment per layer: sigma_w^2 E[phi(z)^2] / E[z^2] for
    z ~ N(0, q) (Poole et al. 2016, eq. 3 over q); 1 keeps the signal (He + ReLU: 2 x 1/2)."""
    if not (q > 0 and math.isfinite(q) and sigma_w > 0):
        return math.nan
    return theory.variance_map(activation or "linear", q, sigma_w) / q


@dataclass
class Diagnosis:
    """What :func:`doctor` found: ``summary`` (a dict), ``layers`` (one dict per layer that
    the example input reached), ``fix`` (code that rescales every flagged layer, "" if none)."""

    summary: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    fix: str = ""

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.summary["verdicts"].items() if n)
        return f"Diagnosis({self.summary['layers']} layers: {counts})"

    def to_json(self, **kwargs: Any) -> str:
        """The summary and the layers as strict JSON (NaN and inf as null)."""
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            return x
        return json.dumps(clean({"summary": self.summary, "layers": self.layers}),
                          allow_nan=False, **kwargs)


def _fix(path: str, layer: Layer, activation: str | None, row: dict[str, Any]
         ) -> dict[str, str]:
    """He / Glorot for the activation that follows, as torch.nn.init code, and its effect."""
    nonlinearity = {"relu": "relu", "silu": "relu", "tanh": "tanh"}.get(activation or "",
                                                                        "linear")
    # torch's fans of a transposed conv are swapped (its fan_out counts what an output reads)
    mode = ', mode="fan_out"' if isinstance(layer, nn.modules.conv._ConvTransposeNd) else ""
    lines = [f'nn.init.kaiming_normal_({path}.weight{mode}, nonlinearity="{nonlinearity}")']
    if layer.bias is not None:
        lines.append(f"nn.init.zeros_({path}.bias)")
    gain = GAINS[nonlinearity]
    new = _moment_gain(activation, gain, 1.0 if activation != "tanh" else row["out_std"] ** 2)
    predicted = gain * row["in_rms"]
    effect = (f"output std ~{predicted:.3g} on its current input (now {row['out_std']:.3g}); "
              f"mean-field second-moment gain per layer {new:.3g} (now "
              f"{row['moment_gain']:.3g}), so the signal keeps its scale with depth")
    return {"code": "\n".join(lines), "effect": effect}


def doctor(model: nn.Module, example_input: Any) -> Diagnosis:
    """Audit ``model``'s initialization on ``example_input`` (a batch), read-only (see the
    module docstring). Per Linear / convolution layer: the recognised init
    (:func:`recognize`), forward gain std(z) / std(x) of the layer's output z and input x,
    backward gain std(dL/dx) / std(dL/dz) for L = sum(output^2) / 2, the probe's act_std,
    dead and saturated fractions (:class:`initlab.torch.Probe`, which reads the activation
    that follows a layer in an nn.Sequential), sigma_w = sqrt(fan_in mean(W^2)), the
    mean-field output std sigma_w rms(x) (+ the bias) and second-moment gain, the verdict of
    :func:`initlab.inspect.verdict`, and a fix where the verdict is not healthy or the
    second-moment gain is outside :data:`MOMENT_BAND`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got model={type(model).__name__}")
    found = list(layers(model))
    if not found:
        raise ValueError(f"model has no Linear or convolution layer to audit: "
                         f"{type(model).__name__}")
    X = torch.as_tensor(example_input).detach().clone()
    if X.is_floating_point():
        X.requires_grad_(True)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook_for(i: int):
        def hook(layer, inputs, output):
            if i not in seen and inputs and isinstance(inputs[0], torch.Tensor):
                seen[i] = (inputs[0], output)  # a shared layer: its first call
        return hook

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    handles = [layer.register_forward_hook(hook_for(i)) for i, (_, layer) in enumerate(found)]
    grads: dict[int, torch.Tensor | None] = {}
    try:
        with torch.random.fork_rng(devices=cuda), Probe(model, symmetry=False,
                                                        histograms=False) as probe:
            outputs = _tensors(model(X))
            wanted = [(key, t) for i, (x, z) in seen.items()
                      for key, t in ((2 * i, x), (2 * i + 1, z)) if t.requires_grad]
            loss = sum((0.5 * (o.double() ** 2).sum() for o in outputs), torch.zeros(()))
            if wanted and isinstance(loss, torch.Tensor) and loss.requires_grad:
                found_grads = torch.autograd.grad(loss, [t for _, t in wanted],
                                                  allow_unused=True)
                grads = {key: g for (key, _), g in zip(wanted, found_grads, strict=True)}
            table = probe.table
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    stats = {row["layer"]: row for row in table.rows}
    activations = probe.activations
    rows, flagged = [], []
    for i, (name, layer) in enumerate(found):
        if i not in seen or i not in stats:
            continue
        x, z = seen[i]
        st = stats[i]
        weight = layer.weight.detach().double()
        fan_in = int(math.prod(weight.shape[1:])) if not isinstance(
            layer, nn.modules.conv._ConvTransposeNd) else int(weight.shape[0]
                                                               * math.prod(weight.shape[2:]))
        sigma_w = math.sqrt(fan_in * float((weight**2).mean()))
        in_rms = float(x.detach().double().pow(2).mean().sqrt())
        bias2 = 0.0 if layer.bias is None else float(layer.bias.detach().double().pow(2).mean())
        strided = isinstance(layer, nn.modules.conv._ConvTransposeNd) and \
            math.prod(layer.stride) > 1  # an output reads fan_in / stride^d inputs: no theory
        out_std = _std(z)
        row: dict[str, Any] = {
            "layer": i, "name": name, "path": attribute_path(model, name),
            "module": _describe(layer), "shape": list(layer.weight.shape),
            "init": recognize(layer.weight).as_dict(), "activation": activations[i],
            "in_std": _std(x), "in_rms": in_rms, "out_std": out_std,
            "forward_gain": out_std / _std(x) if _std(x) > 0 else math.nan,
            "grad_out_std": _std(grads.get(2 * i + 1)), "grad_in_std": _std(grads.get(2 * i)),
            "act_std": st["act_std"], "dead_fraction": st["dead_fraction"],
            "saturated_fraction": st["saturated_fraction"],
            "nonfinite_fraction": st["nonfinite_fraction"], "sigma_w": sigma_w,
            "expected_std": math.nan if strided else math.sqrt(sigma_w**2 * in_rms**2 + bias2),
            "moment_gain": math.nan if strided else _moment_gain(activations[i], sigma_w,
                                                                 out_std**2),
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            row["backward_gain"] = float(np.float64(row["grad_in_std"]) / row["grad_out_std"])
        row["verdict"] = verdict(row)
        lo, hi = MOMENT_BAND
        misscaled = not lo <= row["moment_gain"] <= hi  # NaN: unknown, not flagged
        misscaled = misscaled and math.isfinite(row["moment_gain"])
        row["fix"] = (_fix(row["path"], layer, activations[i], row)
                      if row["verdict"] != "healthy" or misscaled else None)
        if row["fix"]:
            flagged.append(row["fix"]["code"])
        rows.append(row)
    return Diagnosis(_summary(rows, found, seen), rows, "\n".join(flagged))


def _severity(row: dict[str, Any]) -> tuple[int, float]:
    spread = abs(math.log(row["act_std"])) if row["act_std"] > 0 and math.isfinite(
        row["act_std"]) else math.inf
    return VERDICTS.index(row["verdict"]), -spread


def _summary(rows: list[dict[str, Any]], found: list, seen: dict) -> dict[str, Any]:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    worst = min(rows, key=_severity) if rows else None
    fixes = sum(r["fix"] is not None for r in rows)
    return {
        "layers": len(rows), "verdicts": counts,
        "worst": None if worst is None else {k: worst[k] for k in
                                             ("layer", "name", "path", "verdict",
                                                               "act_std")},
        "not_reached": [name for i, (name, _) in enumerate(found) if i not in seen],
        "layers_to_fix": fixes,
        "alternative": ("initlab.torch.lsuv(model, X)  # orthogonal weights, then each layer "
                        "scaled to output std 1 on X (changes the model in place)")
        if fixes else None,
    }
