"""E3 `deep-linear`: a deep linear network multiplies its signal by the same factor at every
layer: exactly a for W = a·I, and g on average for random weights with n·Var(W) = g²."""

from __future__ import annotations

import numpy as np

from initlab import data
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Sequential, replica_labels, sweep
from initlab.report import figures as plots

NAME = "deep-linear"
TITLE = "E3 deep-linear: 1.5 I explodes, 0.5 I vanishes"
CLAIM = ("In a 10-layer linear network with W[1..9] = 1.5 I the activations grow as 1.5^l and "
         "with 0.5 I they shrink as 0.5^l, and the gradients with them; for random weights "
         "n·Var(W) < 1 vanishes, = 1 keeps the variance, > 1 explodes.")
WHY = ("A linear layer with W = a·I multiplies every input by a, so after l layers the signal is "
       "a^l times the input, and back-propagation multiplies by W^T = a·I on the way down. With "
       "random weights each output unit sums n inputs times weights of variance g²/n, so the "
       "variance is multiplied by g² per layer: only g = 1 (Xavier/LeCun) keeps it.")

# part (a): the gain a the claim is about, and the init that should realise it
IDENTITY = {"1.5 I": (1.5, {"name": "identity", "gain": 1.5}),
            "0.5 I": (0.5, {"name": "identity", "gain": 0.5})}
IDENTITY_LAYERS = 9  # W[1..9] = a I, then W[10] a random 2 -> 1 output layer


def _scaled(g: float) -> dict:
    return {"name": "variance_scaling", "scale": g * g, "mode": "fan_in",
            "distribution": "normal"}


# part (b): the g the claim is about, and the init that should realise n Var(W) = g^2
GAINS = {f"g={g}": (g, _scaled(g)) for g in (0.5, 0.9, 1.0, 1.1, 1.5)}
TOLERANCE = 0.05  # the fitted per-layer factor, mean over seeds, against g^2
EXACT = 1e-12  # relative error allowed where the arithmetic is exact up to rounding

CLAIMS = [
    ("E3.identity-explodes", "W = 1.5 I: the activation norm after layer l is 1.5^l times the "
     "input's (to 1e-12 relative), for every sample and seed",
     "ŷ = W[10]·1.5^9·x: activations grow exponentially (1.5^9 ≈ 38.4)"),
    ("E3.identity-vanishes", "W = 0.5 I: the activation norm after layer l is 0.5^l times the "
     "input's (to 1e-12 relative), for every sample and seed",
     "ŷ = W[10]·0.5^9·x: activations shrink exponentially (0.5^9 ≈ 0.00195)"),
    ("E3.identity-gradient", "The gradient scales the same way: ∂L/∂a[l] = a^(9−l)·δ·W[10]ᵀ and "
     "∂L/∂W[1] = a^8·xᵀ·δ·W[10]ᵀ exactly (δ = ∂L/∂z of the output), for both a and every seed",
     "gradients become too big (1.5 I) or too small (0.5 I); no number printed"),
    ("E3.random-factor", "Random weights with n·Var(W) = g²: the fitted per-layer factor of the "
     "activation variance, averaged over seeds, is g² within 5 %, for every g",
     "n·Var(W) < 1 vanishing, = 1 Var(a[L]) = Var(x), > 1 exploding (no number printed)"),
    ("E3.random-phases", "g < 1 vanishes (variance after the last layer < 1/2 of the input's), "
     "g = 1 holds (within [1/2, 2]), g > 1 explodes (> 2), for every seed",
     "n·Var(W) < 1 vanishing, = 1 Var(a[L]) = Var(x), > 1 exploding"),
]


def _identity_run(seeds: list[int]) -> dict:
    """The 2-wide network of part (a) on each seed's moons, every (a, seed) one replica."""
    variants = {name: [spec] * IDENTITY_LAYERS + [None] for name, (_, spec) in IDENTITY.items()}
    labels = replica_labels(variants, seeds)
    moons = {seed: data.moons(seed) for seed in seeds}
    X = np.stack([moons[s][0] for _, s in labels])
    y = np.stack([moons[s][1] for _, s in labels])
    model = Sequential([Dense(2, use_bias=False) for _ in range(IDENTITY_LAYERS)]
                       + [Dense(1, "sigmoid", init="lecun_normal", use_bias=False)])
    model.compile("binary_crossentropy").build(2, **sweep(variants, seeds))
    acts, grads = {}, {}

    def keep_output(i, layer, trace):
        acts[i] = trace.out.copy()

    def keep_gradient(i, layer, result):
        grads[i] = result.dz.copy()
        if i == 0:
            grads["W1"] = result.params["W"].copy()

    with model.register_hook("forward", keep_output), \
            model.register_hook("backward", keep_gradient):
        model.compute_gradients(X, y)
    a = np.array([IDENTITY[name][0] for name, _ in labels])[:, None, None]  # (R, 1, 1)
    W_out = model.layers[-1].params["W"]  # (R, 2, 1)
    upstream = grads[IDENTITY_LAYERS] @ np.swapaxes(W_out, -1, -2)  # δ W[10]^T, (R, n, 2)
    layers = np.arange(1, IDENTITY_LAYERS + 1)
    # forward: |a[l]| / |x| per sample against a^l
    norms = np.stack([np.linalg.norm(acts[k - 1], axis=-1) for k in layers], axis=1)  # (R, 9, n)
    ratio = norms / np.linalg.norm(X, axis=-1)[:, None, :]
    forward_err = np.max(np.abs(ratio / a ** layers[None, :, None] - 1.0), axis=(1, 2))
    # backward: dL/da[l] = a^(9-l) δ W[10]^T for l = 1..9; dL/dW[1] = a^8 x^T δ W[10]^T
    backward_err = np.zeros(len(labels))
    for k in layers:
        expected = a ** (IDENTITY_LAYERS - k) * upstream
        err = np.max(np.abs(grads[k - 1] - expected), axis=(1, 2)) / np.max(
            np.abs(expected), axis=(1, 2))
        backward_err = np.maximum(backward_err, err)
    expected_W1 = a ** (IDENTITY_LAYERS - 1) * (np.swapaxes(X, -1, -2) @ upstream)
    w1_err = np.max(np.abs(grads["W1"] - expected_W1), axis=(1, 2)) / np.max(
        np.abs(expected_W1), axis=(1, 2))
    frob = lambda v: np.linalg.norm(v.reshape(len(v), -1), axis=1)  # noqa: E731
    return {"labels": labels, "ratio_last": frob(acts[IDENTITY_LAYERS - 1]) / frob(X),
            "ratio_layers": np.stack([frob(acts[k - 1]) / frob(X) for k in layers], axis=1),
            "grad_layers": np.stack([frob(grads[k - 1]) / frob(upstream) for k in layers],
                                    axis=1),
            "w1_ratio": frob(grads["W1"]) / frob(np.swapaxes(X, -1, -2) @ upstream),
            "forward_err": forward_err, "backward_err": np.maximum(backward_err, w1_err)}


def _random_run(seeds: list[int], width: int, depth: int, batch: int) -> dict:
    """Width x depth linear nets, every (g, seed) one replica, on a Gaussian batch per seed."""
    variants = {name: spec for name, (_, spec) in GAINS.items()}
    labels = replica_labels(variants, seeds)
    # the batch comes from a child of the seed's stream, so it is not the weights' own numbers
    batches = {s: np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
               .standard_normal((batch, width)) for s in seeds}
    X = np.stack([batches[s] for _, s in labels])
    model = Sequential([Dense(width, use_bias=False) for _ in range(depth)])
    model.build(width, **sweep(variants, seeds))
    variances = [_variance(X)]
    with model.register_hook("forward",
                             lambda i, layer, trace: variances.append(_variance(trace.out))):
        model.predict(X)
    v = np.stack(variances, axis=1)  # (R, depth + 1): the input, then after each layer
    slope = np.polyfit(np.arange(depth + 1), np.log(v).T, 1)[0]  # least squares, per replica
    return {"labels": labels, "variance": v, "factor": np.exp(slope)}


def _variance(a: np.ndarray) -> np.ndarray:
    """Per-replica variance of (R, n, k) values: two passes over the data where np.var makes
    four, which matters at 50 replicas x 21 layers."""
    size = a.shape[1] * a.shape[2]
    mean = a.sum(axis=(1, 2)) / size
    return np.einsum("rij,rij->r", a, a) / size - mean**2


def _pick(labels, name: str, values) -> np.ndarray:
    return np.array([v for (n, _), v in zip(labels, values, strict=True) if n == name])


def run(ctx: Context) -> CardResult:
    seeds = ctx.seeds
    width, depth, batch = (32, 10, 32) if ctx.tiny else (256, 20, 128)
    ident = _identity_run(seeds)
    ctx.progress(0.2)
    rand = _random_run(seeds, width, depth, batch)
    ctx.progress(0.8)

    claims = []
    for cid, name in ((0, "1.5 I"), (1, "0.5 I")):
        a = IDENTITY[name][0]
        err = _pick(ident["labels"], name, ident["forward_err"])
        last = _pick(ident["labels"], name, ident["ratio_last"])
        claims.append(Claim(
            *CLAIMS[cid], f"|a[9]| / |x| = {spread(last, '.6g')} (a^9 = {a**9:.6g}); max "
            f"relative error against a^l over layers, samples and seeds {np.max(err):.1e}",
            check(np.all(err < EXACT))))
    grad_err = ident["backward_err"]
    w1 = {name: spread(_pick(ident["labels"], name, ident["w1_ratio"]), ".6g") for name in IDENTITY}
    claims.append(Claim(
        *CLAIMS[2], "; ".join(f"{name}: |∂L/∂W[1]| / |xᵀδW[10]ᵀ| = {w1[name]} "
                              f"(a^8 = {a**8:.6g})" for name, (a, _) in IDENTITY.items())
        + f"; max relative error of every layer's gradient {np.max(grad_err):.1e}",
        check(np.all(grad_err < EXACT))))

    factor_ok, phase_ok, factor_text, phase_text = [], [], [], []
    for name, (g, _) in GAINS.items():
        factor = _pick(rand["labels"], name, rand["factor"])
        last = _pick(rand["labels"], name, rand["variance"][:, -1] / rand["variance"][:, 0])
        factor_ok.append(abs(np.mean(factor) / g**2 - 1) <= TOLERANCE)
        phase_ok.append(np.all(last < 0.5) if g < 1 else np.all(last > 2) if g > 1
                        else np.all((last >= 0.5) & (last <= 2)))
        factor_text.append(f"{name}: {spread(factor, '.4f')} (g² = {g**2:.2f})")
        phase_text.append(f"{name}: {spread(last, '.3g')} (g^{2 * depth} = {g**(2 * depth):.3g})")
    claims.append(Claim(*CLAIMS[3], "per-layer factor " + "; ".join(factor_text),
                        check(all(factor_ok))))
    claims.append(Claim(*CLAIMS[4], f"Var(a[{depth}]) / Var(x): " + "; ".join(phase_text),
                        check(all(phase_ok))))

    figures = [_identity_figure(ident, ctx.figure("deep-linear-identity")),
               plots.std_vs_depth(_std_curves(rand), ctx.figure("deep-linear-random"),
                                  title=f"E3 width-{width} linear nets, n·Var(W) = g² "
                                        f"(dashed: std(x)·g^l)")]
    ctx.progress(1.0)
    notes = [f"Part (a): 2-wide linear layers without biases, W[1..9] = a·I, W[10] ~ LeCun "
             f"normal (2 -> 1, sigmoid), binary cross-entropy from the logits on each seed's "
             f"moons (400 points); {len(seeds)} seeds per a.",
             f"Part (b): {depth} linear layers of width {width}, no biases, "
             f"W ~ N(0, g²/{width}); a batch of {batch} N(0, 1) inputs per seed; the factor is "
             f"exp of the least-squares slope of log Var(a[l]) over l = 0..{depth}; "
             f"{len(seeds)} seeds per g. The variants of a seed share its random stream, so "
             f"the five g's scale the same standard-normal matrices: a paired comparison.",
             "The exact gradient statement: with W[l] = a·I, ∂L/∂a[l] = a^(9−l)·δ·W[10]ᵀ and "
             "∂L/∂W[l] = a[l−1]ᵀ ∂L/∂a[l] = a^8·xᵀ·δ·W[10]ᵀ for every l, where δ itself depends "
             "on a through the output a^9·x·W[10]."]
    tables = {"identity": _identity_rows(ident), "random": _random_rows(rand)}
    return CardResult(NAME, TITLE, claims, tables,
                      [str(f.relative_to(ctx.folder)) for f in figures], notes,
                      data="make_moons(400, noise 0.2) per seed for W = a·I; a batch of N(0, 1) "
                           "Gaussian inputs per seed for the random weights")


def _std_curves(rand: dict) -> dict:
    curves = {}
    for name, (g, _) in GAINS.items():
        std = np.sqrt(_pick(rand["labels"], name, rand["variance"]))  # (seeds, depth + 1)
        layers = np.arange(std.shape[1])
        curves[name] = {"mean": std.mean(axis=0), "min": std.min(axis=0),
                        "max": std.max(axis=0), "theory": std[:, 0].mean() * g**layers}
    return curves


def _identity_figure(ident: dict, path):
    import matplotlib.pyplot as plt  # figures.py has set the Agg backend

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), layout="constrained")
    layers = np.arange(1, IDENTITY_LAYERS + 1)
    for (name, (a, _)), color in zip(IDENTITY.items(), plots.TAB10, strict=False):
        for ax, key, power in ((axes[0], "ratio_layers", layers),
                               (axes[1], "grad_layers", IDENTITY_LAYERS - layers)):
            values = _pick(ident["labels"], name, ident[key])
            ax.plot(layers, values.mean(axis=0), "o", color=color, label=f"{name} (measured)")
            theory = "a^l" if key == "ratio_layers" else "a^(9−l)"
            ax.plot(layers, a**power, "--", color=color, label=f"{name}: {theory}")
    axes[0].set_ylabel("|a[l]| / |x|")
    axes[1].set_ylabel("|∂L/∂a[l]| / |δ W[10]ᵀ|")
    return plots.finish_log_panels(fig, axes, path, xlabel="layer l",
                                   title="E3 W[1..9] = a·I: forward and backward, measured "
                                         "against a^l")


def _identity_rows(ident: dict) -> list[dict]:
    rows = []
    for name, (a, _) in IDENTITY.items():
        fwd = _pick(ident["labels"], name, ident["ratio_layers"])
        bwd = _pick(ident["labels"], name, ident["grad_layers"])
        for k in range(IDENTITY_LAYERS):
            rows.append({"variant": name, "layer": k + 1, "norm_ratio": float(fwd[:, k].mean()),
                         "theory": a ** (k + 1), "grad_ratio": float(bwd[:, k].mean()),
                         "grad_theory": a ** (IDENTITY_LAYERS - k - 1)})
    return rows


def _random_rows(rand: dict) -> list[dict]:
    rows = []
    for name, (g, _) in GAINS.items():
        v = _pick(rand["labels"], name, rand["variance"])
        for layer in range(v.shape[1]):
            rows.append({"variant": name, "layer": layer,
                         "variance_mean": float(v[:, layer].mean()),
                         "variance_std": float(v[:, layer].std()),
                         "variance_min": float(v[:, layer].min()),
                         "variance_max": float(v[:, layer].max()),
                         "theory": float(v[:, 0].mean() * g ** (2 * layer))})
    return rows
