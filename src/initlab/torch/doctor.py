"""``initlab doctor``: a read-only audit of a PyTorch model's initialization.

For every Linear / convolution layer (:func:`initlab.torch.layers`) it says which
``torch.nn.init`` scheme the weight looks drawn from (:func:`initlab.torch.recognize.recognize`),
what one forward and backward pass of an example input does there (forward and backward gain,
the probe's dead and saturated fractions), the mean-field second-moment gain of the layer with
the activation that follows it (:func:`initlab.theory.variance_map`), a verdict and, where the
layer is mis-scaled, a fix as code to paste. Every other weight of two or more dimensions (an
LSTM's gate matrices, an embedding table, MultiheadAttention's packed projection) is listed with
its recognised init, its gains not measured: no hook sees that matrix's input and output.

The verdict is ``initlab inspect``'s (:func:`initlab.inspect.verdict`) on the layer's statistics,
read in the layer's place in the model, which the autograd graph of the pass shows (functional
ops included): a layer whose output goes straight into a normalization (BatchNorm in training,
LayerNorm, GroupNorm, ...) cannot vanish or explode, the norm sets its scale; a small output that
reaches the model only through norms (a residual branch before a post-LN sum) adds little and
does not compound; and the mean-field gain is judged only along a chain of layers with no norm
between them that reaches the output, where it does compound with depth.

Nothing of the model changes: its parameters are not written, its buffers (BatchNorm running
statistics) are restored after the pass, the gradients come from ``torch.autograd.grad`` so no
``.grad`` is touched, and torch's random state is forked (Dropout).

    report = doctor(model, torch.randn(64, 3, 32, 32))
    report.summary, report.layers, report.weights, print(report.fix)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab import theory
from initlab.inspect import verdict
from initlab.torch.audit import Pass, measure
from initlab.torch.layout import Layer, layers
from initlab.torch.recognize import (
    CANDIDATES,
    GAINS,
    Candidate,
    Recognition,
    module_defaults,
    recognize,
    torch_fans,
)

__all__ = ["CANDIDATES", "Candidate", "Diagnosis", "Recognition", "attribute_path", "doctor",
           "recognize", "torch_fans"]

# a layer whose mean-field second-moment gain is outside this band gets a fix even if healthy
MOMENT_BAND = (0.5, 2.0)
PROBLEMS = ("overflow", "exploding", "vanishing", "dead", "saturated")  # worst first
VERDICTS = (*PROBLEMS, "healthy")
# why a weight is listed without gains, by the module that holds it (the first that matches)
UNMEASURED: dict[type[nn.Module], str] = {
    nn.RNNBase: "a gate matrix of the fused recurrence (an LSTM stacks its i, f, g, o gates): "
                "no hook sees its input and output, so no gain; torch's default is "
                "U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))",
    nn.Embedding: "a lookup table: its rows are the next layer's input, there is no gain; "
                  "torch's default is normal_(), N(0, 1)",
    nn.MultiheadAttention: "q, k and v stacked (3E, E), applied inside "
                           "F.multi_head_attention_forward: no hook sees their inputs and "
                           "outputs; torch's default is xavier_uniform_ over the whole matrix",
}
FUNCTIONAL = ("its parent's forward uses this weight without calling the layer (as "
              "nn.MultiheadAttention does its out_proj): no hook sees its input and output")
OTHER = "not a Linear or convolution layer: no gain measured"


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


def _describe(layer: Layer) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features} -> {layer.out_features})"
    kernel = "x".join(map(str, layer.kernel_size))
    return f"{type(layer).__name__}({layer.in_channels} -> {layer.out_channels}, k={kernel})"


def _moment_gain(activation: str | None, sigma_w: float, q: float) -> float:
    """Mean-field factor of the second moment per layer: sigma_w^2 E[phi(z)^2] / E[z^2] for
    z ~ N(0, q) (Poole et al. 2016, eq. 3 over q); 1 keeps the signal (He + ReLU: 2 x 1/2)."""
    if not (q > 0 and math.isfinite(q) and sigma_w > 0):
        return math.nan
    return theory.variance_map(activation or "linear", q, sigma_w) / q


@dataclass
class Diagnosis:
    """What :func:`doctor` found: ``summary`` (a dict), ``layers`` (one dict per layer that
    the example input reached), ``weights`` (one dict per other weight, listed with its init,
    its gains not measured), ``fix`` (code that rescales every flagged layer, "" if none)."""

    summary: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    fix: str = ""
    weights: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.summary["verdicts"].items() if n)
        listed = f"; {len(self.weights)} other weights not measured" if self.weights else ""
        return f"Diagnosis({self.summary['layers']} layers: {counts or 'none'}{listed})"

    def to_json(self, **kwargs: Any) -> str:
        """The summary, the layers and the weights as strict JSON (NaN and inf as null)."""
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            return x
        return json.dumps(clean({"summary": self.summary, "layers": self.layers,
                                 "weights": self.weights}), allow_nan=False, **kwargs)


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


def _names(names: list[str] | set[str], model: nn.Module) -> str:
    shown = sorted(names)[:2]
    more = f" and {len(names) - 2} more" if len(names) > 2 else ""
    return ", ".join(f"{attribute_path(model, n)} ({type(model.get_submodule(n)).__name__})"
                     for n in shown) + more


def _zero_weight(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and not bool(torch.any(weight != 0))


def _judge(row: dict[str, Any], i: int, run: Pass, model: nn.Module) -> bool:
    """Set the row's verdict and note from the layer's statistics and its place in the model;
    True where the mean-field gain compounds, so a gain outside the band deserves a fix."""
    stats = row["stats_verdict"] = verdict(row)
    reached = None if run.reached is None else run.reached.get(i, set())
    norms = {s for s in reached or () if isinstance(s, str)}
    only_norms = bool(reached) and norms == reached
    direct = run.direct.get(i, []) if reached is None or only_norms else []
    notes, zero = [], False
    if direct:
        zero = any(_zero_weight(model.get_submodule(n)) for n in direct)
        notes.append(f"followed by {_names(direct, model)}: " + (
            "its weight is 0, so the branch starts as zero, by design where residual branches "
            "are zero-initialised (Goyal et al. 2017, torchvision's zero_init_residual)"
            if zero else "the norm sets its output's scale"))
    elif only_norms:
        notes.append(f"every path from its output meets a norm first, {_names(norms, model)}: "
                     f"the norm rescales what arrives, so its scale does not compound and a "
                     f"small output only adds little to what it is summed with")
    row["followed_by"] = [attribute_path(model, n) for n in direct]
    row["verdict"] = ("healthy" if stats in ("vanishing", "exploding") and direct
                      or stats == "vanishing" and only_norms else stats)
    compounding = reached is None or i in run.to_output and i in run.chained
    lo, hi = MOMENT_BAND
    if reached and not compounding and not (direct or only_norms) and \
            math.isfinite(row["moment_gain"]) and not lo <= row["moment_gain"] <= hi:
        why = ("no layer before or after it without a norm between, so it does not compound "
               "with depth" if i in run.to_output else "every path from it meets a norm "
               "before the model output, which resets the scale")
        notes.append(f"mean-field gain {row['moment_gain']:.3g} not judged: {why}")
    if row["grad_out_std"] == 0 and not (direct and zero):
        notes.append("no gradient reaches its output at init (a layer downstream outputs 0, "
                     "such as a residual branch's zero-initialised norm): no backward gain")
    row["note"] = "; ".join(notes) or None
    return compounding


def _row(i: int, name: str, layer: Layer, run: Pass, model: nn.Module) -> dict[str, Any]:
    in_std, in_rms, out_std = run.moments[i]
    st = run.stats[i]
    activation = run.activations[i]
    weight = layer.weight.detach().double()
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    fan_in = int(weight.shape[0] * math.prod(weight.shape[2:]) if transposed
                 else math.prod(weight.shape[1:]))
    sigma_w = math.sqrt(fan_in * float((weight**2).mean()))
    bias2 = 0.0 if layer.bias is None else float(layer.bias.detach().double().pow(2).mean())
    # an output of a strided transposed conv reads fan_in / stride^d inputs: no theory
    strided = isinstance(layer, nn.modules.conv._ConvTransposeNd) and \
        math.prod(layer.stride) > 1
    grad_out, grad_in = run.grads.get(i, (math.nan, math.nan))
    row: dict[str, Any] = {
        "layer": i, "name": name, "path": attribute_path(model, name),
        "module": _describe(layer), "shape": list(layer.weight.shape),
        "init": recognize(layer.weight).as_dict(), "activation": activation,
        "in_std": in_std, "in_rms": in_rms, "out_std": out_std,
        "forward_gain": out_std / in_std if in_std > 0 else math.nan,
        "grad_out_std": grad_out, "grad_in_std": grad_in,
        "act_std": st["act_std"], "dead_fraction": st["dead_fraction"],
        "saturated_fraction": st["saturated_fraction"],
        "nonfinite_fraction": st["nonfinite_fraction"], "sigma_w": sigma_w,
        "expected_std": math.nan if strided else math.sqrt(sigma_w**2 * in_rms**2 + bias2),
        "moment_gain": math.nan if strided else _moment_gain(activation, sigma_w, out_std**2),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        row["backward_gain"] = float(np.float64(grad_in) / grad_out)
    compounding = _judge(row, i, run, model)
    lo, hi = MOMENT_BAND
    misscaled = compounding and math.isfinite(row["moment_gain"]) and \
        not lo <= row["moment_gain"] <= hi  # NaN: unknown, not flagged
    row["fix"] = (_fix(row["path"], layer, activation, row)
                  if row["verdict"] != "healthy" or misscaled else None)
    return row


def _weights(model: nn.Module, skip: set[int], functional: set[int]) -> list[dict[str, Any]]:
    """Every weight of two or more dimensions outside the measured layers: its init and why
    its gains are not measured (ids in ``functional``: layers used without being called)."""
    rows, listed = [], set(skip)
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim < 2 or id(p) in listed:
                continue
            listed.add(id(p))  # a tied weight once
            note = FUNCTIONAL if id(p) in functional else next(
                (n for t, n in UNMEASURED.items() if isinstance(module, t)), OTHER)
            rows.append({"name": f"{mname}.{pname}" if mname else pname,
                         "path": f"{attribute_path(model, mname)}.{pname}",
                         "module": type(module).__name__, "shape": list(p.shape),
                         "init": recognize(p, module_defaults(module)).as_dict(),
                         "verdict": "not measured", "note": note})
    return rows


def _consistent(rows: list[dict[str, Any]]) -> None:
    """Name each layer's init, among the ties of its recognition (the very same
    distribution), by the one that the most layers of the model fit: torchvision's ResNet
    draws every conv with kaiming_normal_(mode="fan_out"), which at a 1 x 1 downsample
    (fan_out = 2 fan_in) draws exactly what fan_in "linear" does."""
    counts = Counter(c for r in rows for c in {r["init"]["code"], *r["init"]["ties"]})
    for r in rows:
        init = r["init"]
        best = max([init["code"], *init["ties"]], key=counts.__getitem__)  # first on equal
        if best != init["code"]:
            init["ties"] = [init["code"], *(c for c in init["ties"] if c != best)]
            init["also"] = [init["code"], *(c for c in init["also"] if c != best)]
            init["code"] = best


def _copies(entries: list[tuple[dict[str, Any], torch.Tensor, str]]) -> None:
    """Mark each weight drawn at random whose values equal an earlier one's (another tensor:
    a tied weight is listed once), with code that draws it afresh from the recognised scheme.
    nn.TransformerEncoder deep-copies the layer it is given, so every layer starts the same
    (pytorch/pytorch#86274)."""
    first: dict[tuple[Any, ...], list[tuple[str, torch.Tensor]]] = {}
    for entry, weight, path in entries:
        entry["same_as"] = None
        code = entry["init"]["code"]
        if code.startswith(("zeros_", "constant_")):  # equal by design
            continue
        group = first.setdefault((tuple(weight.shape), weight.dtype), [])
        head = weight.detach().reshape(-1)[:64]  # a cheap first look: most differ there
        same = next((p for p, w in group if torch.equal(w.detach().reshape(-1)[:64], head)
                     and torch.equal(w, weight)), None)
        if same is None:
            group.append((path, weight))
            continue
        entry["same_as"] = same
        name, _, args = code.partition("(")
        redraw = "" if code == "unknown" else \
            f", draw it afresh: nn.init.{name}({path}{', ' if args != ')' else ''}{args}"
        note = f"the same values as {same} (a deep copy starts identical){redraw}"
        entry["note"] = f"{entry['note']}; {note}" if entry.get("note") else note


def doctor(model: nn.Module, example_input: Any) -> Diagnosis:
    """Audit ``model``'s initialization on ``example_input`` (a batch), read-only (see the
    module docstring). Per Linear / convolution layer: the recognised init
    (:func:`recognize`), forward gain std(z) / std(x) of the layer's output z and input x,
    backward gain std(dL/dx) / std(dL/dz) through the layer alone for
    L = sum(output^2) / 2, the probe's act_std, dead and saturated fractions
    (:class:`initlab.torch.Probe`, which reads the activation that follows a layer in an
    nn.Sequential), sigma_w = sqrt(fan_in mean(W^2)), the mean-field output std sigma_w rms(x)
    (+ the bias) and second-moment gain, ``stats_verdict`` (:func:`initlab.inspect.verdict`),
    ``verdict`` (that, read in the layer's place: ``note`` says why where they differ and
    ``followed_by`` names the norms its output goes straight into) and a fix where the verdict
    is not healthy, or the layer is on a chain where the mean-field gain compounds and that
    gain is outside :data:`MOMENT_BAND`. Per other weight (``Diagnosis.weights``): its init.
    Rows and weights name in ``same_as`` an earlier weight with the very same values (a deep
    copy), their note the code that draws them afresh."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got model={type(model).__name__}")
    found = list(layers(model))
    if not found and not any(p.ndim >= 2 for p in model.parameters()):
        raise ValueError(f"model has no Linear or convolution layer, nor any other weight, "
                         f"to audit: {type(model).__name__}")
    rows: list[dict[str, Any]] = []
    run = Pass()
    if found:
        X = torch.as_tensor(example_input).detach().clone()
        if X.is_floating_point():
            X.requires_grad_(True)
        run = measure(model, X, found)
        rows = [_row(i, name, layer, run, model) for i, (name, layer) in enumerate(found)
                if i in run.moments and i in run.stats]
    _consistent(rows)
    measured = {id(found[r["layer"]][1].weight) for r in rows}
    unreached = {id(layer.weight) for i, (_, layer) in enumerate(found)
                 if i not in run.moments and i not in run.functional}
    functional = {id(found[i][1].weight) for i in run.functional}
    weights = _weights(model, measured | unreached, functional)
    _copies([(r, found[r["layer"]][1].weight, f"{r['path']}.weight") for r in rows]
            + [(w, model.get_parameter(w["name"]), w["path"]) for w in weights])
    fix = "\n".join(r["fix"]["code"] for r in rows if r["fix"])
    return Diagnosis(_summary(rows, found, run, weights), rows, fix, weights)


def _severity(row: dict[str, Any]) -> tuple[int, float]:
    spread = abs(math.log(row["act_std"])) if row["act_std"] > 0 and math.isfinite(
        row["act_std"]) else math.inf
    return VERDICTS.index(row["verdict"]), -spread


def _summary(rows: list[dict[str, Any]], found: list, run: Pass,
             weights: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    worst = min(rows, key=_severity) if rows else None
    fixes = sum(r["fix"] is not None for r in rows)
    return {
        "layers": len(rows), "verdicts": counts,
        "worst": None if worst is None else {k: worst[k] for k in
                                             ("layer", "name", "path", "verdict",
                                                               "act_std")},
        "not_reached": [name for i, (name, _) in enumerate(found)
                        if i not in run.moments and i not in run.functional],
        "not_measured": len(weights),
        "copies": [e["path"] for e in rows + weights if e["same_as"]],
        "layers_to_fix": fixes,
        "alternative": ("initlab.torch.lsuv(model, X)  # orthogonal weights, then each layer "
                        "scaled to output std 1 on X (changes the model in place)")
        if fixes else None,
    }
