"""E4 `depth`: 100 layers of width 512 in float32 at initialization: N(0, 1) weights overflow,
N(0, 1) × 0.01 underflow, Xavier keeps a linear stack's scale, halves a ReLU stack's variance
at every layer, and Kaiming keeps the ReLU stack's scale. In context, as E1's context variants:
orthogonal weights in the linear stack, LSUV and ZerO in the ReLU stack."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from initlab import data, schemes, theory
from initlab.experiments.runner import CardResult, Claim, Context, check, spread
from initlab.nn import Dense, Sequential
from initlab.report import figures as plots

NAME = "depth"
TITLE = "E4 depth: 100 layers with naive, tiny, Xavier and Kaiming init"
CLAIM = ("Through 100 layers N(0, 1) weights blow the activations up to infinity (float32: near "
         "layer 28), N(0, 1) × 0.01 shrinks them to 0, Xavier keeps a linear stack's std near 1 "
         "but halves a ReLU stack's variance every layer, and Kaiming fixes that. In context: "
         "orthogonal weights keep a linear stack's norm exactly, LSUV pins every ReLU layer's "
         "pre-activation std at 1, and ZerO's identity layers pass a ReLU stack's signal "
         "unchanged.")
WHY = ("A layer of n inputs multiplies the variance by n·Var(W): 512 for N(0, 1) weights (float32 "
       "overflows after log(3.4e38)/log(22.6) ≈ 28 layers), 0.0512 for N(0, 1) × 0.01, and 1 for "
       "Xavier's Var(W) = 1/n. A ReLU zeroes half its inputs, so E[relu(z)²] = Var(z)/2 and "
       "Xavier loses half the variance per layer; Kaiming's Var(W) = 2/n puts it back.")

# per architecture, the variant's weight init, and the weight variance the theory assumes (the
# context variants, last, have no mean-field line: LSUV and ZerO are not i.i.d. draws, and
# orthogonal's would repeat Xavier's)
LINEAR = {"naive": {"name": "normal", "std": 1.0}, "tiny": {"name": "normal", "std": 0.01},
          "xavier": "lecun_normal", "orthogonal": "orthogonal"}
RELU = {"xavier": "lecun_normal", "kaiming": "he_normal", "lsuv": "orthogonal", "zero": "zeros"}
CONTEXT = ("orthogonal", "lsuv", "zero")
# context variants that are model-level schemes, applied to their replicas after build (as E1's)
# on each seed's own batch; the init above is where they start from: orthonormal matrices, LSUV's
# own first step (hence orthogonal=False: not drawn a second time)
LSUV_TOLERANCE = 0.1
SCHEMES = {"lsuv": lambda model, X: schemes.lsuv(model, X, tol=LSUV_TOLERANCE, orthogonal=False),
           "zero": lambda model, X: schemes.zero_init(model)}
# a ReLU variant with the same init as a linear one draws, from the same seed's stream, the same
# matrices (the stacks differ only in the activation): they are drawn once, for the linear stack
SHARED = {"xavier": "xavier", "lsuv": "orthogonal"}
# an orthogonal draw is a QR per layer (~40 ms at 512²; 4 s a seed): at the default size the
# variants that need one run on the first seed only
CONTEXT_SEEDS = 1
NEEDS_QR = ("orthogonal", "lsuv")
THEORY_VAR = {"naive": lambda fan_in: 1.0, "tiny": lambda fan_in: 1e-4,
              "xavier": lambda fan_in: 1.0 / fan_in, "kaiming": lambda fan_in: 2.0 / fan_in}
OVERFLOW_BY = 50  # "well before layer 100"
XAVIER_BAND = (0.5, 2.0)
ISOMETRY_TOLERANCE = 1e-4  # float32 rounding leaves ~1e-7; i.i.d. weights drift by percents
IDENTITY_TOLERANCE = 1e-6  # ZerO's identity layers copy their input: the deviation is exactly 0
KAIMING_BAND = (0.2, 5.0)
HALVING_TOLERANCE = 0.05
STANDARDIZE_TOLERANCE = 0.05  # the validation split's |mean| and |std - 1|
F32 = np.finfo(np.float32)
SUBNORMAL_MIN = float(np.nextafter(np.float32(0), np.float32(1)))

CLAIMS = [
    ("E4.standardized", "Standardised with the training mean and std, the training split has "
     "mean 0 and std 1 (to 1e-12) and the validation split is within 0.05 of both",
     "train mean ≈ 0, std ≈ 1; validation normalised with train_mean (checked 'close' with a "
     "threshold)"),
    ("E4.naive-overflow", "Linear layers with N(0, 1) weights overflow to inf/nan well before "
     "layer 100 (by layer 50), for every seed", "reaches infinity near layer 28 (float32)"),
    ("E4.tiny-underflow", "Linear layers with N(0, 1) × 0.01 weights underflow: every value is "
     "exactly 0 before layer 100, for every seed", "values reaching 0 (no layer printed)"),
    ("E4.xavier-linear", "Linear layers with Xavier N(0, 1/n_in) keep the std within [0.5, 2] at "
     "every layer to 100, for every seed", "std stays near 1 to layer 100"),
    ("E4.relu-xavier-halves", "ReLU layers with Xavier halve the variance each layer: fitted "
     "per-layer factor, averaged over seeds, 0.5 within 5 %", "'makes them half their original "
     "value' every layer"),
    ("E4.relu-kaiming", "ReLU layers with Kaiming N(0, 2/n_in) keep the std within [0.2, 5] at "
     "every layer to 100, for every seed", "the std is kept (the mean is not)"),
    ("E4.orthogonal-isometry", "Linear layers with orthogonal weights keep every sample's norm: "
     "the root-mean-square output of layers 2 to 100 equals layer 1's within 1e-4, for every "
     "seed", "not in the sources; Saxe et al. 2014: an orthogonal deep linear network is an "
     "isometry at any depth"),
    ("E4.lsuv-unit", "After LSUV (tol 0.1) every ReLU layer's pre-activation std on the seed's "
     "batch is within 0.1 of 1, layers 1 to 100, for every seed", "not in the sources; Mishkin & "
     "Matas 2016: LSUV makes each layer's output variance 1"),
    ("E4.zero-identity", "ZerO is deterministic and makes every square ReLU layer the identity "
     "on its non-negative input: the same weights for every seed, and the std of layers 2 to "
     "100 equal to layer 1's (within 1e-6)", "not in the sources; Zhao et al. 2022: identity "
     "and Hadamard matrices, no randomness"),
]


def _sizes(ctx: Context) -> dict:
    if ctx.tiny:
        return {"width": 64, "depth": 100, "batch": 16, "seeds": ctx.seeds, "limit": 1000,
                "context_seeds": ctx.seeds}
    return {"width": 512, "depth": 100, "batch": 64, "seeds": ctx.seeds[:3], "limit": 10_000,
            "context_seeds": ctx.seeds[:CONTEXT_SEEDS]}


def _seeds_of(variants: dict, size: dict) -> dict:
    return {name: size["context_seeds"] if name in NEEDS_QR else size["seeds"]
            for name in variants}


def _model(activation: str, width: int, depth: int, classes: int) -> Sequential:
    layers = [Dense(width, activation, use_bias=False) for _ in range(depth)]
    # a linear 10-unit head gives the backward pass a loss: softmax cross-entropy on the labels
    return Sequential(layers + [Dense(classes, use_bias=False)]).compile("softmax_crossentropy")


def _probe(activation: str, variants: dict, seeds_of: dict, split: data.Split, size: dict,
           *, start: dict | None = None, keep: tuple = ()) -> dict:
    """One batched forward and backward pass of every (variant, seed); per-layer statistics in
    float64 (float32 would round the squares of subnormal values to 0).

    ``start[name][seed]``: the per-layer weights a variant's replica gets instead of drawing
    them; ``keep``: the variants whose drawn weights are returned, as such a ``start``."""
    start = start or {}
    labels = [(name, seed) for name in variants for seed in seeds_of[name]]
    batch = {s: np.random.default_rng(np.random.SeedSequence(s).spawn(1)[0])
             .choice(len(split.X_train), size["batch"], replace=False)
             for s in dict.fromkeys(s for _, s in labels)}
    X = np.stack([split.X_train[batch[s]] for _, s in labels]).astype(np.float32)
    y = np.stack([split.y_train[batch[s]] for _, s in labels])
    model = _model(activation, size["width"], size["depth"], split.n_classes)
    # variant-major, replica r from SeedSequence(its seed), as nn.sweep lays a sweep out; a
    # replica given its start is built as zeros, which draws nothing
    with threadpool_limits(1):  # orthogonal's QRs: threaded, they crawl when a core is busy
        model.build(X.shape[-1], rng=[np.random.SeedSequence(s) for _, s in labels],
                    variants=["zeros" if n in start else variants[n] for n, _ in labels],
                    dtype=np.float32)
    for r, (name, seed) in enumerate(labels):
        if name in start:
            for layer, W in zip(model.layers, start[name][seed], strict=True):
                layer.params["W"][r] = W
    kept = {name: {seed: [layer.params["W"][r].copy() for layer in model.layers]
                   for r, (n, seed) in enumerate(labels) if n == name} for name in keep}
    schemes_done, same_weights = {}, {}
    for name, scheme in SCHEMES.items():
        index = [r for r, (n, _) in enumerate(labels) if n == name]
        if index:
            sub = model.take(index)
            schemes_done[name] = scheme(sub, X[index])
            model.put(index, sub)
            same_weights[name] = all(np.array_equal(layer.params["W"][index[0]],
                                                    layer.params["W"][r])
                                     for layer in model.layers for r in index[1:])
    depth = size["depth"]
    act = {k: np.zeros((len(labels), depth)) for k in ("mean", "std", "finite", "zero")}
    # LSUV's own quantity, the pre-activation z = x W (no biases), recomputed here from the
    # layer's input and weights for its replicas
    pre = [r for r, (n, _) in enumerate(labels) if n == "lsuv"]
    act["pre_std"] = np.full((len(labels), depth), np.nan)
    layer_input = [X[pre]]
    grad = np.zeros((len(labels), depth))
    cosine = np.zeros(len(labels))  # between the batch's samples, after the last layer

    def forward(i, layer, trace):
        a = trace.out
        if i < depth:
            a64 = a.astype(np.float64)
            act["mean"][:, i] = a64.mean(axis=(1, 2))
            act["std"][:, i] = a64.std(axis=(1, 2))
            act["finite"][:, i] = np.all(np.isfinite(a), axis=(1, 2))
            act["zero"][:, i] = np.all(a == 0, axis=(1, 2))
            if pre:
                z = layer_input[0] @ layer.params["W"][pre]
                act["pre_std"][pre, i] = z.astype(np.float64).std(axis=(1, 2))
                layer_input[0] = a[pre]
        if i == depth - 1:
            cosine[:] = _mean_cosine(a.astype(np.float64))

    def backward(i, layer, result):
        if i < depth:
            grad[:, i] = result.dz.astype(np.float64).std(axis=(1, 2))

    with np.errstate(all="ignore"), model.register_hook("forward", forward), \
            model.register_hook("backward", backward):
        model.compute_gradients(X, y, param_grads=False)  # the hooks need only dL/dz
    X64 = X.astype(np.float64)
    each_seed = np.stack([split.X_train[b] for b in batch.values()]).astype(np.float32)
    return {"labels": labels, "act": act, "grad": grad, "cosine": cosine,
            "input_std": X64.std(axis=(1, 2)),
            "q0": float(np.mean(each_seed.astype(np.float64) ** 2)),  # every seed's batch once
            "fan_in": X.shape[-1], "kept": kept,
            "schemes": schemes_done, "same_weights": same_weights}


def _mean_cosine(a: np.ndarray) -> np.ndarray:
    """Per replica, the mean cosine similarity between different samples of (R, n, k) outputs."""
    unit = a / np.linalg.norm(a, axis=2, keepdims=True)
    gram = unit @ np.swapaxes(unit, 1, 2)
    n = a.shape[1]
    return (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (n * (n - 1))


def _first(flags: np.ndarray) -> np.ndarray:
    """Per replica, the first layer (1-based) where flags is true; nan where it never is."""
    hit = flags.astype(bool)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1.0, np.nan)


def _factor(std: np.ndarray) -> np.ndarray:
    """Per replica, exp of the least-squares slope of log variance over the layers whose std is
    a finite normal float32 number."""
    layers = np.arange(1, std.shape[1] + 1)
    out = []
    for row in std:
        ok = np.isfinite(row) & (row >= F32.tiny)
        out.append(np.exp(np.polyfit(layers[ok], np.log(row[ok] ** 2), 1)[0])
                   if ok.sum() >= 2 else np.nan)
    return np.array(out)


def _theory_std(activation: str, variant: str, q0: float, fan_in: int, width: int,
                depth: int) -> np.ndarray:
    """The mean-field std after each layer: q_1 = n_in Var(W) q0, q_l = V(q_{l-1})."""
    weight_var = THEORY_VAR[variant]
    q = [fan_in * weight_var(fan_in) * q0]
    sigma_w = np.sqrt(width * weight_var(width))
    with np.errstate(over="ignore", invalid="ignore"):  # naive weights leave float64 too
        for _ in range(depth - 1):
            q.append(theory.variance_map(activation, q[-1], sigma_w))
        return theory.activation_std(activation, np.array(q))


def _pick(run: dict, name: str, values) -> np.ndarray:
    return np.array([v for (n, _), v in zip(run["labels"], values, strict=True) if n == name])


def run(ctx: Context) -> CardResult:
    size = _sizes(ctx)
    seeds = size["seeds"]
    split = data.image_data(ctx.data, limit=size["limit"])
    X_train, X_val, scale = data.standardize(split.X_train, split.X_test)
    standardized = data.Split(X_train, split.y_train, X_val, split.y_test, split.name,
                              split.source)
    ctx.progress(0.1)
    shared = {name: source for name, source in SHARED.items()
              if name in RELU and source in LINEAR and RELU[name] == LINEAR[source]}
    linear = _probe("linear", LINEAR, _seeds_of(LINEAR, size), standardized, size,
                    keep=tuple(set(shared.values())))
    ctx.progress(0.6)
    kept = linear.pop("kept")
    relu = _probe("relu", RELU, _seeds_of(RELU, size), standardized, size,
                  start={name: kept[source] for name, source in shared.items()})
    del kept
    ctx.progress(0.95)
    runs = {"linear": (linear, LINEAR), "relu": (relu, RELU)}

    train = (float(X_train.mean()), float(X_train.std()))
    val = (float(X_val.mean()), float(X_val.std()))
    overflow = _first(1 - _pick(linear, "naive", linear["act"]["finite"]))
    underflow = _first(_pick(linear, "tiny", linear["act"]["zero"]))
    xavier_std = _pick(linear, "xavier", linear["act"]["std"])
    kaiming_std = _pick(relu, "kaiming", relu["act"]["std"])
    relu_xavier_std = _pick(relu, "xavier", relu["act"]["std"])
    halving = _factor(relu_xavier_std)
    kaiming_theory = _theory_std("relu", "kaiming", relu["q0"], relu["fan_in"], size["width"],
                                 size["depth"])[-1]
    claims = [
        Claim(*CLAIMS[0], f"train mean {train[0]:.1e}, std {train[1]:.15f}; validation mean "
                          f"{val[0]:.4f}, std {val[1]:.4f} ({split.name}, training mean "
                          f"{scale['mean']:.4f} and std {scale['std']:.4f} applied to both)",
              check(abs(train[0]) < 1e-12 and abs(train[1] - 1) < 1e-12
                    and abs(val[0]) <= STANDARDIZE_TOLERANCE
                    and abs(val[1] - 1) <= STANDARDIZE_TOLERANCE)),
        Claim(*CLAIMS[1], f"first layer with an inf or nan: {spread(overflow, '.4g')}",
              check(np.all(overflow <= OVERFLOW_BY))),
        Claim(*CLAIMS[2], f"first layer whose values are all exactly 0: "
                          f"{spread(underflow, '.4g')}", check(np.all(underflow < size["depth"]))),
        Claim(*CLAIMS[3], f"smallest std over layers {spread(xavier_std.min(axis=1), '.3f')}, "
                          f"largest {spread(xavier_std.max(axis=1), '.3f')}, at layer "
                          f"{size['depth']} {spread(xavier_std[:, -1], '.3f')}",
              check(_within(xavier_std, XAVIER_BAND))),
        Claim(*CLAIMS[4], f"per-layer variance factor {spread(halving, '.4f')}; std at layer "
                          f"{size['depth']} {spread(relu_xavier_std[:, -1], '.3g')}",
              check(abs(np.mean(halving) / 0.5 - 1) <= HALVING_TOLERANCE)),
        Claim(*CLAIMS[5], f"smallest std over layers {spread(kaiming_std.min(axis=1), '.3f')}, "
                          f"largest {spread(kaiming_std.max(axis=1), '.3f')}, at layer "
                          f"{size['depth']} {spread(kaiming_std[:, -1], '.3f')}",
              check(_within(kaiming_std, KAIMING_BAND))),
    ]
    context_claims, context_notes = _context(linear, relu, size)
    claims += context_claims
    curves, rows = _curves_and_rows(runs, size)
    figures = [plots.std_vs_depth({k: v["act"] for k, v in curves.items()},
                                  ctx.figure("depth-activation-std"),
                                  title=f"E4 {size['depth']} layers of width {size['width']}, "
                                        f"float32 (dashed: mean-field theory)"),
               # the variants that keep their scale, which overlap near 1 on the full range
               _band_figure({k: v["act"] for k, v in curves.items()
                             if np.all((v["act"]["mean"] > 1e-2) & (v["act"]["mean"] < 1e2))},
                            ctx.figure("depth-activation-std-kept"), first_layer=0,
                            ylabel="std of the layer's output",
                            title="E4 the variants that keep their scale (band: min-max over "
                                  "seeds; dashed: mean-field theory)"),
               _band_figure({k: v["grad"] for k, v in curves.items()},
                            ctx.figure("depth-gradient-std"), first_layer=1,
                            ylabel="std of ∂L/∂z (softmax cross-entropy)",
                            title="E4 back-propagated gradient per layer (band: min-max over "
                                  "seeds)")]
    ctx.progress(1.0)
    fewer = f" (the first {len(seeds)} of the {len(ctx.seeds)} asked for)" \
        if len(seeds) < len(ctx.seeds) else ""
    notes = [f"{len(seeds)} seeds{fewer} and a batch of {size['batch']} training images per "
             f"seed, to keep the card fast: every replica needs {size['depth']} × "
             f"{size['width']}² random weights, whose draws are most of the card's time.",
             f"{size['depth']} bias-free layers of width {size['width']} (the first maps "
             f"{linear['fan_in']} pixels to {size['width']}) in float32, then a linear 10-unit "
             f"head with the same init; the backward pass is softmax cross-entropy on the "
             f"images' labels, and the gradient std is that of ∂L/∂z of each layer.",
             "Statistics are computed in float64 from the float32 values, so subnormal values "
             "count as non-zero; 'exactly 0' means every value of the layer's output is 0.",
             "The variants of a seed share its random stream and its batch: naive and tiny are "
             "the same draws, 100 times apart, and the two Xavier stacks the same matrices "
             "(drawn once, for the linear stack).",
             "The dashed theory is the mean-field recursion (theory.variance_map) with each "
             "variant's n·Var(W), drawn where it stays inside float32's range (not for the "
             "context variants).",
             f"At finite width the mean-field std is only the average: per seed, the log of a "
             f"ReLU stack's variance wanders like a random walk whose spread grows with "
             f"depth/width (Hanin & Rolnick 2018), and the batch does not average it out "
             f"because a deep ReLU stack makes its inputs nearly collinear (mean cosine between "
             f"the batch's samples at layer {size['depth']}: ReLU + Kaiming "
             f"{spread(_pick(relu, 'kaiming', relu['cosine']), '.3f')}, linear + Xavier "
             f"{spread(_pick(linear, 'xavier', linear['cosine']), '.3f')}), while a linear stack "
             f"keeps their spread and stays tighter. Kaiming std at layer {size['depth']} per "
             f"seed: {', '.join(f'{v:.3g}' for v in kaiming_std[:, -1])} (theory "
             f"{kaiming_theory:.3g})."] + context_notes
    return CardResult(NAME, TITLE, claims, {"layers": rows},
                      [str(f.relative_to(ctx.folder)) for f in figures], notes,
                      data=f"{split.name} ({split.source}): the first {len(split.X_train)} "
                           f"training and {len(split.X_test)} validation images, standardised "
                           f"with the training mean and std")


def _context(linear: dict, relu: dict, size: dict) -> tuple[list[Claim], list[str]]:
    """The context variants' claims and notes: orthogonal (linear stack), LSUV and ZerO (ReLU)."""
    depth = size["depth"]
    drift = {name: _rms_drift(linear, name) for name in ("orthogonal", "xavier")}
    orthogonal_std = _pick(linear, "orthogonal", linear["act"]["std"])
    lsuv_std = _pick(relu, "lsuv", relu["act"]["std"])
    lsuv_off = np.max(np.abs(_pick(relu, "lsuv", relu["act"]["pre_std"]) - 1), axis=1)
    lsuv_iterations = int(np.max(relu["schemes"]["lsuv"].iterations))
    zero_std = _pick(relu, "zero", relu["act"]["std"])
    zero_off = np.max(np.abs(zero_std[:, 1:] / zero_std[:, :1] - 1), axis=1)
    zero_seeds = len(zero_std)
    same = relu["same_weights"]["zero"]
    kaiming_std = _pick(relu, "kaiming", relu["act"]["std"])
    claims = [
        Claim(*CLAIMS[6], f"largest |rms_l / rms_1 − 1| over layers 2 to {depth}: "
                          f"{spread(drift['orthogonal'], '.1e')} (Xavier's i.i.d. weights: "
                          f"{spread(drift['xavier'], '.1e')}); std at layer 1 "
                          f"{spread(orthogonal_std[:, 0], '.4f')}, at layer {depth} "
                          f"{spread(orthogonal_std[:, -1], '.4f')}",
              check(np.all(drift["orthogonal"] <= ISOMETRY_TOLERANCE))),
        Claim(*CLAIMS[7], f"largest |std(z) − 1| over layers 1 to {depth}: "
                          f"{spread(lsuv_off, '.3g')}, recomputed from each layer's input "
                          f"and weights (LSUV took at most {lsuv_iterations} scaling(s) a "
                          f"layer); output std at layer {depth} {spread(lsuv_std[:, -1], '.3f')}",
              check(np.all(lsuv_off < LSUV_TOLERANCE))),
        Claim(*CLAIMS[8], f"weights identical across the {zero_seeds} seed(s): "
                          f"{'yes' if same else 'no'}; largest |std_l / std_1 − 1| over layers "
                          f"2 to {depth}: {spread(zero_off, '.1e')}; std at layer 1 "
                          f"{spread(zero_std[:, 0], '.4f')} (the seeds differ only in their "
                          f"batch)", check(same and np.all(zero_off <= IDENTITY_TOLERANCE))),
    ]
    qr_seeds = len(orthogonal_std)
    notes = [f"Context variants, beyond the sources (as E1's): orthogonal weights in the linear "
             f"stack; LSUV (tol {LSUV_TOLERANCE}, on each seed's own batch) and ZerO in the ReLU "
             f"stack. LSUV starts from orthonormal matrices, its own first step: the linear "
             f"orthogonal variant's, drawn once per seed. Orthogonal and LSUV ran on "
             f"{qr_seeds} seed(s), ZerO on {zero_seeds}: an orthogonal draw is a QR per layer "
             f"(about 4 s a seed at width {size['width']}).",
             f"What they show: orthogonal layers are isometries, so a linear stack's std stays "
             f"at layer 1's ({spread(orthogonal_std[:, 0], '.3f')}; the first layer maps "
             f"{linear['fan_in']} pixels to {size['width']} units) to layer {depth} "
             f"({spread(orthogonal_std[:, -1], '.3f')}) with none of Xavier's drift. LSUV "
             f"measures and divides, so every ReLU layer's pre-activation std is 1 on the batch "
             f"and its output std stays near {spread(np.median(lsuv_std, axis=1), '.3f')} "
             f"(median over layers) to layer {depth} ({spread(lsuv_std[:, -1], '.3f')}), where "
             f"Kaiming's per-seed random walk ends at "
             f"{', '.join(f'{v:.3g}' for v in kaiming_std[:, -1])}. ZerO's square layers are "
             f"the identity and ReLU passes non-negative values unchanged, so every layer from "
             f"2 on repeats layer 1's output exactly (std {spread(zero_std[:, -1], '.3f')}).",
             "Fixup does not apply to this card: it scales the branches of residual blocks and "
             "zeroes each branch's last layer so that every block starts as the identity, and "
             "this plain stack has no branch (schemes.fixup refuses a model without Residual "
             "blocks). E7 `fixup` covers residual networks."]
    return claims, notes


def _rms_drift(run: dict, name: str) -> np.ndarray:
    """Per replica, the largest |rms_l / rms_1 − 1| over layers 2..depth (rms² = std² + mean²:
    the batch's mean squared activation, which an isometry keeps exactly)."""
    rms = np.hypot(_pick(run, name, run["act"]["std"]), _pick(run, name, run["act"]["mean"]))
    return np.max(np.abs(rms[:, 1:] / rms[:, :1] - 1), axis=1)


def _within(std: np.ndarray, band: tuple[float, float]) -> bool:
    return bool(np.all(np.isfinite(std) & (std >= band[0]) & (std <= band[1])))


def _curves_and_rows(runs: dict, size: dict) -> tuple[dict, list[dict]]:
    curves, rows = {}, []
    for activation, (run, variants) in runs.items():
        for name in variants:
            std = _pick(run, name, run["act"]["std"])
            grad = _pick(run, name, run["grad"])
            mean = _pick(run, name, run["act"]["mean"])
            theory_std = _theory_std(activation, name, run["q0"], run["fan_in"], size["width"],
                                     size["depth"]) if name in THEORY_VAR \
                else np.full(size["depth"], np.nan)
            drawable = (theory_std <= F32.max) & (theory_std >= SUBNORMAL_MIN)
            label = f"{activation} {name}"
            # index 0 is the input, so that index l is the output of layer l
            with_input = np.column_stack([_pick(run, name, run["input_std"]), std])
            theory_line = np.concatenate([[with_input[:, 0].mean()],
                                          np.where(drawable, theory_std, np.nan)]) \
                if name in THEORY_VAR else None
            curves[label] = {"act": _band(with_input) | {"theory": theory_line},
                             "grad": _band(grad)}
            for layer in range(std.shape[1]):
                rows.append({"variant": label, "layer": layer + 1,
                             "act_mean": float(np.mean(mean[:, layer])),
                             **_row_stats("act_std", std[:, layer]),
                             "theory_std": float(theory_std[layer]),
                             **_row_stats("grad_std", grad[:, layer])})
    return curves, rows


def _band(values: np.ndarray) -> dict:
    """Mean, min and max over seeds per layer, inf and nan dropped (a line stops there)."""
    clean = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        broken = np.any(np.isnan(clean), axis=0)
        return {"mean": np.where(broken, np.nan, clean.mean(axis=0)),
                "min": np.where(broken, np.nan, clean.min(axis=0)),
                "max": np.where(broken, np.nan, clean.max(axis=0))}


def _row_stats(key: str, values: np.ndarray) -> dict:
    with np.errstate(all="ignore"):
        return {f"{key}_mean": float(np.mean(values)), f"{key}_std": float(np.std(values)),
                f"{key}_min": float(np.min(values)), f"{key}_max": float(np.max(values))}


def _band_figure(curves: dict, path, *, first_layer: int, ylabel: str, title: str):
    """The per-variant bands, each variant in its colour of the full figure and the context
    variants dash-dotted with markers."""
    return plots.band_curves(curves, path, first_layer=first_layer, ylabel=ylabel, title=title,
                             colors=_colors(curves),
                             marked={name for name in curves if name.split()[-1] in CONTEXT})


def _colors(curves: dict) -> list:
    """Each variant's colour in the full figure (tab10 in the order of LINEAR then RELU), so
    that a variant keeps its colour in every figure."""
    order = [f"linear {n}" for n in LINEAR] + [f"relu {n}" for n in RELU]
    return [plots.TAB10[order.index(name) % 10] for name in curves]
