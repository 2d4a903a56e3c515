"""The PyTorch adapter on real modules: layouts, fans, distributions, LSUV, Fixup, probes."""

import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from initlab import fans  # noqa: E402
from initlab import torch as itorch  # noqa: E402
from initlab.probes import HIST_EDGES  # noqa: E402


def _cnn():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 6 * 6, 10)).double()


def _mlp():
    return nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 3)).double()


def test_shapes_and_fans_agree_with_torch_for_linear_and_conv():
    for layer in (nn.Linear(7, 5), nn.Conv1d(3, 8, 5), nn.Conv2d(4, 6, (3, 5)),
                  nn.Conv3d(2, 3, 3)):
        ours = itorch.initlab_shape(layer)
        assert fans.compute_fans(ours) == nn.init._calculate_fan_in_and_fan_out(layer.weight)


def test_transposed_conv_fans_count_the_channels_read_and_written():
    layer = nn.ConvTranspose2d(3, 8, 5)  # weight stored (in=3, out=8, 5, 5)
    assert itorch.initlab_shape(layer) == (5, 5, 3, 8)
    assert fans.compute_fans(itorch.initlab_shape(layer)) == (3 * 25, 8 * 25)
    # PyTorch's helper reads them the other way round for a transposed conv
    assert nn.init._calculate_fan_in_and_fan_out(layer.weight) == (8 * 25, 3 * 25)
    itorch.initialize(layer, "he_normal", rng=0)
    assert layer.weight.detach().std().item() == pytest.approx(math.sqrt(2 / 75), rel=0.05)


def test_layout_is_moved_not_reshaped():
    layer = nn.Conv2d(2, 3, (4, 5))
    seen = {}

    def record(shape, *, rng=None, dtype=np.float64):
        seen["w"] = np.arange(np.prod(shape), dtype=float).reshape(shape)
        return seen["w"]

    itorch.initialize(layer, record)
    w = seen["w"]  # (kh, kw, in, out)
    torch_w = layer.weight.detach().numpy()  # (out, in, kh, kw)
    assert torch_w[2, 1, 3, 4] == w[3, 4, 1, 2]


@pytest.mark.parametrize("ours,theirs,kwargs", [
    ("he_normal", nn.init.kaiming_normal_, {"nonlinearity": "relu"}),
    ("glorot_uniform", nn.init.xavier_uniform_, {}),
    ("he_uniform", nn.init.kaiming_uniform_, {"nonlinearity": "relu"}),
])
def test_same_distribution_as_torch_nn_init_on_a_cnn(ours, theirs, kwargs):
    model = _cnn()
    itorch.initialize(model, ours, rng=0)
    reference = _cnn()
    torch.manual_seed(0)
    for (_, a), (_, b) in zip(itorch.layers(model), itorch.layers(reference), strict=True):
        theirs(b.weight, **kwargs)
        p = stats.ks_2samp(a.weight.detach().numpy().ravel(), b.weight.detach().numpy().ravel())
        assert p.pvalue > 1e-4
        assert torch.all(a.bias == 0)
    # negative control: a wrong scheme is told apart on the big layer
    wrong = _cnn()
    itorch.initialize(wrong, "lecun_normal", rng=0)
    big = list(itorch.layers(reference))[1][1].weight.detach().numpy().ravel()
    w = list(itorch.layers(wrong))[1][1].weight.detach().numpy().ravel()
    assert stats.ks_2samp(w, big).pvalue < 1e-4


def test_torch_default_bias_uses_the_layers_fan_in():
    model = _mlp()
    itorch.initialize(model, "torch_default", bias="torch_default", rng=0)
    first = model[0]
    bound = 1 / math.sqrt(20)
    assert first.bias.abs().max().item() <= bound
    assert first.bias.abs().max().item() > 0.5 * bound


def test_lsuv_on_torch_modules_reaches_unit_std():
    for model, X in ((_mlp(), torch.randn(128, 20, dtype=torch.float64) * 4),
                     (_cnn(), torch.randn(16, 3, 8, 8, dtype=torch.float64))):
        result = itorch.lsuv(model, X, tol=0.01, rng=0)
        assert result.ok
        for _, layer in itorch.layers(model):  # independent recomputation
            out = {}
            h = layer.register_forward_hook(lambda m, i, o, out=out: out.setdefault("o", o))
            with torch.no_grad():
                model(X)
            h.remove()
            assert abs(out["o"].std().item() - 1.0) < 0.01


def test_probe_records_every_layer_and_its_gradients():
    model = _cnn()
    itorch.initialize(model, "he_normal", rng=0)
    X, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    with itorch.probe(model) as p:
        nn.functional.cross_entropy(model(X), y).backward()
    table = p.table
    assert len(table) == 3 and list(table.column("units")) == [16, 32, 10]
    first = table.where(layer=0).rows[0]
    out = model[0](X).detach().numpy()
    assert first["pre_std"] == pytest.approx(out.std(), rel=1e-12)
    after = model[1](model[0](X)).detach().numpy()  # the ReLU that follows it
    assert isinstance(model[1], nn.ReLU)
    assert first["act_std"] == pytest.approx(after.std(), rel=1e-12)
    assert first["dead_fraction"] == pytest.approx(
        np.mean(np.all(np.moveaxis(after, 1, -1).reshape(-1, 16) == 0, axis=0)), abs=1e-12)
    assert np.all(np.isfinite(table.column("grad_std")))
    assert table.rows[1]["weight_grad_std"] == pytest.approx(  # population std, as the engine
        model[2].weight.grad.std(correction=0).item(), rel=1e-12)


def test_probe_histograms_are_the_counts_of_each_layers_outputs():
    model = _cnn()
    itorch.initialize(model, "he_normal", rng=0)
    with torch.no_grad():
        model[0].weight.mul_(30)  # outputs far beyond +-5: the open end bins are used too
    X = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    with itorch.probe(model) as p:
        model(X)
        model(2 * X)
    first, second = model[0](X).detach().numpy(), model[2](model[1](model[0](X))).detach()
    counts = p.histogram(0)
    assert counts.shape == (2, len(HIST_EDGES) - 1)
    assert np.array_equal(counts[0], np.histogram(first, HIST_EDGES)[0])
    assert counts[0, 0] > 0 and counts[0, -1] > 0 and counts[0].sum() == first.size
    assert not np.array_equal(counts[1], counts[0])  # the second pass is its own row
    assert np.array_equal(p.histogram(1)[0], np.histogram(second.numpy(), HIST_EDGES)[0])
    with itorch.probe(model, histograms=False) as q:
        model(X)
    with pytest.raises(ValueError, match="keeps no histograms"):
        q.histogram(0)


def _engine_columns(symmetry=True):
    from initlab.nn import Dense, Sequential
    from initlab.probes import Probe

    model = (Sequential([Dense(8, "tanh"), Dense(1, "sigmoid")])
             .compile("binary_crossentropy").build(2, rng=0))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 2)), rng.integers(0, 2, (16, 1)).astype(float)
    with Probe(model, symmetry=symmetry) as probe:
        model.fit(X, y, epochs=2, callbacks=[probe])
    return probe.table.columns


def _torch_columns(model, X, symmetry=True):
    with itorch.probe(model, symmetry=symmetry) as p:
        model(X).sum().backward()
    columns = p.table.columns
    assert columns.index("name") == columns.index("layer") + 1  # the one extra column
    return [c for c in columns if c != "name"]


def test_probe_table_has_the_engine_probes_columns_in_the_same_order():
    engine = _engine_columns()
    assert {"saturated_fraction", "awake", "update_ratio", "rank"} <= set(engine)
    x_mlp, x_cnn = torch.randn(8, 20, dtype=torch.float64), torch.randn(4, 3, 8, 8).double()
    assert _torch_columns(_mlp(), x_mlp) == engine
    assert _torch_columns(_cnn(), x_cnn) == engine
    assert _torch_columns(_mlp(), x_mlp, symmetry=False) == _engine_columns(symmetry=False)
    assert "rank" not in _engine_columns(symmetry=False)


def _outputs(model, X):
    """Each probed layer's output as (samples, units), recorded by hooks of the test's own."""
    seen, handles = [], []
    for _, layer in itorch.layers(model):
        handles.append(layer.register_forward_hook(
            lambda m, i, o: seen.append(o.detach().movedim(1, -1).reshape(-1, o.shape[1]))))
    with torch.no_grad():
        model(X)
    for h in handles:
        h.remove()
    return [o.numpy() for o in seen]


@pytest.mark.parametrize("make,X", [
    (_mlp, torch.randn(32, 20, dtype=torch.float64)),
    (_cnn, torch.randn(4, 3, 8, 8, dtype=torch.float64)),
])
def test_probe_rank_and_distinct_units_recomputed(make, X):
    from initlab.probes import distinct_units

    model = make()
    first = model[0]
    with torch.no_grad():  # units 1 and 2 copy unit 0: one unit less than the width, twice
        first.weight[1:3] = first.weight[0]
        first.bias[1:3] = first.bias[0]
    with itorch.probe(model) as p:
        model(X)
    table, outputs = p.table, _outputs(model, X)
    for row, (_, layer), out in zip(table.rows, itorch.layers(model), outputs, strict=True):
        W = layer.weight.detach().reshape(layer.weight.shape[0], -1).T.numpy()
        assert row["distinct_units"] == distinct_units(W, layer.bias.detach().numpy())
        assert row["rank"] == np.linalg.matrix_rank(out)
    assert table.rows[0]["distinct_units"] == table.rows[0]["units"] - 2
    assert table.rows[0]["rank"] <= table.rows[0]["units"] - 2
    assert table.rows[1]["distinct_units"] == table.rows[1]["units"]


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 8, 3, groups=4), nn.Conv2d(4, 6, 3, groups=2),
                                   nn.ConvTranspose2d(4, 6, 3, groups=2),
                                   nn.ConvTranspose2d(3, 5, 2, stride=2)])
def test_distinct_units_of_grouped_and_transposed_convs_are_the_distinct_output_channels(layer):
    layer = layer.double()
    with torch.no_grad():  # every channel gets the same filter and bias: only the groups differ
        layer.weight.copy_(torch.randn(layer.weight.shape[2:]).double())
        layer.bias.fill_(0.5)
    X = torch.randn(2, layer.in_channels, 6, 6, dtype=torch.float64)
    with itorch.probe(layer) as p:
        layer(X)
    out = _outputs(layer, X)[0]
    functions = len(np.unique(out.T.round(10), axis=0))  # channels that compute the same map
    assert p.table.rows[0]["distinct_units"] == functions == layer.groups
    assert p.table.rows[0]["units"] == layer.out_channels


@pytest.mark.parametrize("make,X", [
    (_mlp, torch.randn(32, 20, dtype=torch.float64)),
    (_cnn, torch.randn(4, 3, 8, 8, dtype=torch.float64)),
])
def test_probe_gradient_columns_and_awake_behind_a_zeroed_layer(make, X):
    model = make()
    middle = list(itorch.layers(model))[1][1]
    with torch.no_grad():  # the first layer's gradient passes through W = 0: exactly zero
        middle.weight.zero_()
    with itorch.probe(model) as p:
        model(X).square().sum().backward()
    for row, (_, layer) in zip(p.table.rows, itorch.layers(model), strict=True):
        w, g = layer.weight.detach().numpy(), layer.weight.grad.numpy()
        assert row["weight_std"] == pytest.approx(np.std(w), rel=1e-12)
        assert row["weight_grad_std"] == pytest.approx(np.std(g), rel=1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            assert row["grad_weight_ratio"] == pytest.approx(np.std(g) / np.std(w), rel=1e-12,
                                                             nan_ok=True)
        assert row["awake"] is bool(np.any(g != 0))
    assert [row["awake"] for row in p.table.rows] == [False, True, True]
    assert p.table.rows[1]["grad_weight_ratio"] == np.inf  # weight_std 0, as the engine divides
    with itorch.probe(model) as q:  # no backward: no gradient columns
        with torch.no_grad():
            model(X)
    row = q.table.rows[0]
    assert all(np.isnan(row[k]) for k in ("grad_std", "weight_grad_std", "awake",
                                           "grad_weight_ratio", "update_ratio"))


def test_probe_keeps_each_passes_weight_gradient_through_zero_grad_and_steps():
    model = _mlp()
    X, y = torch.randn(32, 20, dtype=torch.float64), torch.randint(0, 3, (32,))
    lr = 0.1
    sgd = torch.optim.SGD(model.parameters(), lr=lr)
    grads, weights = [], []
    with itorch.probe(model) as p:
        for _ in range(3):
            sgd.zero_grad()  # None before the next pass: the probe must have caught it already
            nn.functional.cross_entropy(model(X), y).backward()
            grads.append(model[2].weight.grad.numpy().copy())
            weights.append(model[2].weight.detach().numpy().copy())
            sgd.step()
    rows = p.table.where(layer=1).rows
    assert len(rows) == 3
    for row, g, w in zip(rows, grads, weights, strict=True):
        assert row["weight_grad_std"] == pytest.approx(np.std(g), rel=1e-12)
        assert row["weight_std"] == pytest.approx(np.std(w), rel=1e-12)
        # plain SGD, worked by hand: W' - W = -lr dW, so update_ratio = lr * grad_weight_ratio
        assert row["update_ratio"] == pytest.approx(lr * row["grad_weight_ratio"], rel=1e-9)


@pytest.mark.parametrize("make,X", [
    (_mlp, torch.randn(32, 20, dtype=torch.float64)),
    (_cnn, torch.randn(4, 3, 8, 8, dtype=torch.float64)),
])
def test_probe_update_ratio_after_one_step(make, X):
    model = make()
    before = [layer.weight.detach().numpy().copy() for _, layer in itorch.layers(model)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with itorch.probe(model) as p:
        model(X).square().mean().backward()
        opt.step()
        model(X)  # a second pass with no step after it
    after = [layer.weight.detach().numpy() for _, layer in itorch.layers(model)]
    for row, w0, w1 in zip(p.table.where(step=0).rows, before, after, strict=True):
        assert row["update_ratio"] == pytest.approx(np.std(w1 - w0) / np.std(w0), rel=1e-12)
        assert row["update_ratio"] > 0
    assert np.all(np.isnan(p.table.where(step=1).column("update_ratio")))
    assert np.all(np.isnan(itorch.probe_batch(make(), X.shape[1:]).table.column(
        "update_ratio")))  # a probe batch takes no step, as the engine's record()


def test_probe_update_ratio_sees_a_fused_optimizer_and_a_zero_update():
    model = _mlp()
    X = torch.randn(16, 20, dtype=torch.float64)
    w0 = model[0].weight.detach().numpy().copy()
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # no version bump
    with itorch.probe(model) as p:
        model(X).sum().backward()
        adam.step()
    w1 = model[0].weight.detach().numpy()
    assert p.table.rows[0]["update_ratio"] == pytest.approx(np.std(w1 - w0) / np.std(w0),
                                                            rel=1e-12)
    with torch.no_grad():
        model[2].weight.zero_()  # layer 0 sleeps: SGD adds its zero gradient, a zero update
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd.zero_grad()
    with itorch.probe(model) as q:
        model(X).sum().backward()
        sgd.step()
    assert q.table.rows[0]["awake"] is False and q.table.rows[0]["update_ratio"] == 0.0


def _saturated(z, activation):  # the engine's bounds, written out again
    a = np.tanh(z) if activation == "tanh" else 1 / (1 + np.exp(-z))
    lo, hi = (-0.97, 0.97) if activation == "tanh" else (0.03, 0.97)
    return np.mean((a <= lo) | (a >= hi))


@pytest.mark.parametrize("act,name", [(nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid")])
def test_saturated_fraction_applies_the_activation_after_the_layer(act, name):
    X = torch.randn(64, 10, dtype=torch.float64)
    fractions = []
    for scale in (100.0, 1e-3):
        model = nn.Sequential(nn.Linear(10, 50), act(), nn.Linear(50, 5), nn.ReLU(),
                              nn.Linear(5, 2)).double()
        with torch.no_grad():
            model[0].weight.mul_(scale)
            model[0].bias.mul_(scale)
        with itorch.probe(model) as p:
            model(X)
        rows = p.table.rows
        z = model[0](X).detach().numpy()
        assert rows[0]["saturated_fraction"] == pytest.approx(_saturated(z, name), rel=1e-12)
        assert np.isnan(rows[1]["saturated_fraction"])  # ReLU: the engine has no rule either
        assert np.isnan(rows[2]["saturated_fraction"])  # nothing after the last layer
        fractions.append(rows[0]["saturated_fraction"])
    assert fractions[0] > 0.9 and fractions[1] < 0.01


def test_saturated_fraction_of_a_conv_and_where_the_order_says_nothing():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid()).double()
    with torch.no_grad():
        model[0].weight.mul_(20)
    X = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    with itorch.probe(model) as p:
        model(X)
    z = _outputs(model, X)[0]
    assert p.table.rows[0]["saturated_fraction"] == pytest.approx(_saturated(z, "sigmoid"))
    assert 0.1 < p.table.rows[0]["saturated_fraction"] < 1

    class Custom(nn.Module):  # registered Linear then Tanh, but the Tanh reads something else
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.Tanh()

        def forward(self, x):
            return self.fc(self.act(x))

    class Reversed(nn.Sequential):
        def forward(self, x):
            for module in reversed(self):
                x = module(x)
            return x

    for model in (Custom(), Reversed(nn.Linear(4, 4), nn.Tanh())):
        with itorch.probe(model) as p:
            model(torch.randn(8, 4))
        assert np.isnan(p.table.rows[0]["saturated_fraction"])


def test_inspect_verdict_reads_the_saturated_fraction():
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 3))
    itorch.initialize(model, {"name": "normal", "std": 3.0}, rng=0)
    rows = itorch.inspect_module(model, batch=64)
    assert rows[0]["saturated_fraction"] > 0.5 and rows[0]["verdict"] == "saturated"
    itorch.initialize(model, "glorot_normal", rng=0)
    assert itorch.inspect_module(model, batch=64)[0]["verdict"] == "healthy"


def _blocks(L, make_branch, head=None):
    model = nn.Sequential(*[itorch.Residual(make_branch()) for _ in range(L)],
                          *([head] if head is not None else []))
    return model.double()


def _mlp_branch(width=256):
    return lambda: nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))


def _conv_branch(channels=32):  # m = 3, padding keeps the shape
    return lambda: nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1))


@pytest.mark.parametrize("L,make_branch,m,X", [
    (4, _mlp_branch(), 2, torch.randn(32, 256, dtype=torch.float64)),
    (3, _conv_branch(), 3, torch.randn(4, 32, 6, 6, dtype=torch.float64)),
])
def test_fixup_starts_as_the_identity_with_scaled_he_branches(L, make_branch, m, X):
    model = _blocks(L, make_branch)
    result = itorch.fixup(model, rng=0)
    assert result.blocks == L and result.branch_layers == (m,) * L and result.output is None
    with torch.no_grad():
        assert torch.equal(model(X), X)
    shrink = L ** (-1 / (2 * m - 2))
    assert result.scales == pytest.approx((shrink,) * L, rel=1e-15)
    drawn, zero = [], []
    for block in model:
        weights = [layer for _, layer in itorch.layers(block)]
        assert block.scale.item() == 1.0
        assert all(torch.all(layer.bias == 0) for layer in weights)
        zero.append(weights[-1].weight)
        drawn += [layer.weight.detach().numpy().ravel() for layer in weights[:-1]]
    assert all(torch.all(w == 0) for w in zero)
    fan_in = fans.compute_fans(itorch.initlab_shape(next(itorch.layers(model))[1]))[0]
    expected = math.sqrt(2 / fan_in) * shrink  # He normal, then Fixup's L^(-1/(2m-2))
    w = np.concatenate(drawn)
    assert stats.kstest(w, stats.norm(0, expected).cdf).pvalue > 1e-4
    assert stats.kstest(w, stats.norm(0, expected / shrink).cdf).pvalue < 1e-4  # unscaled He


def test_fixup_zeroes_the_output_layer_and_the_network_trains():
    torch.manual_seed(0)
    stem, head = nn.Linear(5, 16), nn.Linear(16, 1)
    model = nn.Sequential(stem, nn.ReLU(), *_blocks(3, _mlp_branch(16)), head).double()
    before = stem.weight.detach().clone()
    result = itorch.fixup(model, rng=0)
    assert result.output == "5" and result.blocks == 3
    assert torch.equal(stem.weight, before)  # layers before the blocks keep their weights
    assert torch.all(head.weight == 0) and torch.all(head.bias == 0)
    X = torch.randn(64, 5, dtype=torch.float64)
    y = X[:, :1] ** 2
    with torch.no_grad():
        assert torch.equal(model(X), torch.zeros(64, 1, dtype=torch.float64))
    initial = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=0.05)
    grads = []
    for _ in range(3):
        sgd.zero_grad()
        nn.functional.mse_loss(model(X), y).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        sgd.step()
    assert grads[0]["5.weight"].abs().max() > 0  # the zero output layer learns first
    assert torch.all(grads[0]["2.branch.2.weight"] == 0)  # behind a zero output layer
    assert grads[1]["2.branch.2.weight"].abs().max() > 0  # then each zero last branch layer
    assert grads[1]["4.scale"].abs().max() == 0 and grads[2]["4.scale"].abs().max() > 0
    assert grads[2]["2.branch.0.weight"].abs().max() > 0  # then the layers before it
    changed = [not torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True)]
    assert all(changed[2:])  # every Fixup parameter has moved (the stem's 2 are 0 and 1)


def test_fixup_on_blocks_a_user_names_and_its_reproducibility():
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[_conv_branch(8)() for _ in range(2)],
                             nn.Flatten(), nn.Linear(8 * 4 * 4, 2)).double()

    a, b, c = build(), build(), build()
    result = itorch.fixup(a, blocks=[a[1], a[2]], rng=1)
    assert result == itorch.FixupResult(2, (3, 3), (2 ** -0.25,) * 2, "4")
    assert torch.all(a[1][4].weight == 0) and torch.all(a[4].weight == 0)
    itorch.fixup(b, blocks=[b[1], b[2]], rng=1)
    itorch.fixup(c, blocks=[c[1], c[2]], rng=2)
    same = [torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)]
    assert all(same)
    assert not torch.equal(a[1][0].weight, c[1][0].weight)
    assert torch.equal(a[0].weight, c[0].weight)  # the stem is not a block: untouched


def test_fixup_draws_the_engines_weights_from_the_same_generator():
    import copy

    from initlab.nn import Dense, Residual, Sequential
    from initlab.schemes import fixup

    engine = Sequential([Residual([Dense(6, "relu"), Dense(6, "relu"), Dense(6)])
                         for _ in range(2)] + [Dense(3)])
    engine.build(6, rng=5)
    gen = copy.deepcopy(engine.rngs[0])
    fixup(engine)
    model = nn.Sequential(*[itorch.Residual(nn.Sequential(
        nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)))
        for _ in range(2)], nn.Linear(6, 3)).double()
    itorch.fixup(model, rng=gen)
    theirs = [W[0].T for layer in engine.layers for k, W in layer.params.items()
              if k.endswith("W")]
    ours = [layer.weight.detach().numpy() for _, layer in itorch.layers(model)]
    assert len(ours) == len(theirs) == 7
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert np.any(ours[0] != 0) and np.all(ours[2] == 0)


def test_fixup_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match="no initlab.torch.Residual block in module Sequential"):
        itorch.fixup(_mlp())
    model = nn.Sequential(itorch.Residual(nn.ReLU()), nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"Residual block '0' has no Linear.*ReLU"):
        itorch.fixup(model)
    mlp = _mlp()
    with pytest.raises(ValueError, match=r"blocks\[1\] has no Linear.*blocks\[1\]=Tanh\(\)"):
        itorch.fixup(mlp, blocks=[mlp[0], mlp[1]])
    with pytest.raises(ValueError, match=r"blocks\[0\] must be a submodule of module"):
        itorch.fixup(mlp, blocks=[nn.Linear(3, 3)])
    with pytest.raises(ValueError, match=r"blocks\[1\] shares layers"):
        itorch.fixup(mlp, blocks=[mlp, mlp[0]])
    with pytest.raises(ValueError, match=r"blocks must be a non-empty list; got blocks=\[\]"):
        itorch.fixup(mlp, blocks=[])
    with pytest.raises(TypeError, match="branch must be a torch.nn.Module; got branch=3"):
        itorch.Residual(3)


def test_errors():
    with pytest.raises(ValueError, match="no Linear or convolution layer"):
        itorch.initialize(nn.ReLU(), "he_normal")
    with pytest.raises(ValueError, match="unknown initializer 'he_nromal'"):
        itorch.initialize(_mlp(), "he_nromal")


def test_inspect_command_builds_a_torch_model_from_a_factory(tmp_path, monkeypatch, capsys):
    from initlab.cli import main

    (tmp_path / "factories.py").write_text(
        "from torch import nn\n"
        "def cnn():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(8 * 6 * 6, 10))\n"
        "def tanh_mlp():\n"
        "    return nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 10))\n"
        "def not_a_module():\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["inspect", "--torch", "factories:cnn", "--input-shape", "3,8,8",
                 "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "factories:cnn" in out and "healthy" in out
    assert main(["inspect", "--torch", "factories:cnn", "--input-shape", "3,8,8",
                 "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert (tmp_path / "out" / "std_vs_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "layers.csv").read_text().count("\n") == 3  # header + 2 layers
    image = matplotlib.image.imread(tmp_path / "out" / "histograms.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0
    first = (tmp_path / "out" / "histograms.png").read_bytes()
    assert main(["inspect", "--torch", "factories:cnn", "--input-shape", "3,8,8", "--init",
                 "zeros", "--out", str(tmp_path / "out")]) == 0  # written beside the first
    assert (tmp_path / "out" / "histograms.png").read_bytes() == first
    assert matplotlib.image.imread(tmp_path / "out" / "histograms-2.png").size > 0
    capsys.readouterr()
    assert main(["inspect", "--torch", "factories:cnn", "--init", "zeros",
                 "--input-shape", "3,8,8"]) == 0
    assert "dead" in capsys.readouterr().out  # zero weights: every output is 0
    # N(0, 1) weights on 20 inputs: z has std ~4.5, so tanh saturates most outputs
    assert main(["inspect", "--torch", "factories:tanh_mlp", "--init", "normal"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    first, last = rows[0].split("│"), rows[1].split("│")
    assert "saturated" in first[-2] and int(first[6].strip().rstrip("%")) >= 50
    assert last[6].strip() == "-"  # no Tanh after the output layer: no saturation to read
    assert main(["inspect", "--torch", "factories:cnn"]) == 2
    assert "--input-shape" in capsys.readouterr().out
    assert main(["inspect", "--torch", "factories:not_a_module"]) == 2
    assert "not a torch.nn.Module" in capsys.readouterr().out
    assert main(["inspect", "--torch", "factories"]) == 2
    assert "package.module:function" in capsys.readouterr().out


def test_torch_probe_table_draws_the_engines_awake_timeline(tmp_path):
    # zero weights, random biases (card E5): at step t exactly the last t + 1 layers receive a
    # weight gradient, as the engine's bias-only card measures; the engine's awake_layers and
    # awake_timeline read the torch table as they read the engine's
    from initlab.probes import awake_layers
    from initlab.report import figures

    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(6, 6), nn.Tanh())],
                          nn.Linear(6, 1)).double()
    itorch.initialize(model, "zeros", bias={"name": "normal", "std": 1.0}, rng=0)
    X = torch.randn(32, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (X[:, :1] > 0).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with itorch.probe(model, symmetry=False, histograms=False) as probe:
        for _ in range(6):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(X), y).backward()
            opt.step()
    steps, awake = awake_layers(probe.table)
    expected = np.array([[layer >= 4 - t for layer in range(5)] for t in range(6)])
    np.testing.assert_array_equal(steps, np.arange(6))
    np.testing.assert_array_equal(awake, expected)
    path = figures.awake_timeline(steps, awake, tmp_path / "awake.png")
    assert matplotlib.image.imread(path).std() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_modules_get_the_rounded_float64_draw(dtype):
    module = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Conv1d(4, 8, 3)).to(dtype)
    itorch.initialize(module, "orthogonal", bias="torch_default", rng=0)
    W = module[0].weight.detach().double()
    eps = torch.finfo(dtype).eps
    # rows of PyTorch's (out, in) are orthonormal to half precision: |W W^T - I| ~ sqrt(in) eps
    assert (W @ W.T - torch.eye(32, dtype=torch.float64)).abs().max() < 8 * eps
    reference = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Conv1d(4, 8, 3)).double()
    itorch.initialize(reference, "orthogonal", bias="torch_default", rng=0)
    for ours, exact in zip(module.parameters(), reference.parameters(), strict=True):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours.detach(), exact.detach().to(dtype), rtol=0, atol=0)


def test_half_precision_orthogonal_works_where_torch_orthogonal_fails():
    module = nn.Linear(16, 8).half()
    if module.weight.device.type == "cpu":  # PyTorch's QR has no half-precision CPU kernel
        with pytest.raises((NotImplementedError, RuntimeError)):
            nn.init.orthogonal_(module.weight.detach().clone())
    itorch.initialize(module, "orthogonal", rng=1)
    W = module.weight.detach().double()
    assert torch.allclose(W @ W.T, torch.eye(8, dtype=torch.float64), atol=8e-3)


def test_float16_torch_default_stays_inside_its_bound():
    layer = nn.Linear(1, 4096 * 16).half()  # fan_in 1: bound 1 for weights and bias
    for seed in range(5):
        itorch.initialize(layer, "torch_default", bias="torch_default", rng=seed)
        assert layer.weight.max().item() < 1.0 and layer.bias.max().item() < 1.0


def test_zero_element_layers_are_initialized_with_a_warning():
    for spec in ("zeros", "he_normal", "torch_default", "orthogonal"):
        layer = nn.Linear(0, 4)
        with pytest.warns(UserWarning, match=r"shape=\(0, 4\) has no elements"):
            itorch.initialize(layer, spec, rng=0)
        assert layer.weight.shape == (4, 0)
        assert torch.equal(layer.bias.detach(), torch.zeros(4))  # the default zeros bias
    layer = nn.Conv2d(3, 0, 3)
    with pytest.warns(UserWarning, match="has no elements"):
        itorch.initialize(layer, "he_uniform", bias="torch_default", rng=0)
    assert layer.weight.shape == (0, 3, 3, 3) and layer.bias.shape == (0,)


def test_a_layer_without_inputs_gets_torchs_zero_bias_for_torch_default():
    """nn.Linear(0, 4): PyTorch's reset_parameters draws its bias from U(-0, 0) (its bound is
    0 where fan_in is 0); initlab.torch.initialize does the same, not an error."""
    reference = nn.Linear(0, 4)  # PyTorch's own init
    assert torch.equal(reference.bias.detach(), torch.zeros(4))
    layer = nn.Linear(0, 4)
    with torch.no_grad():
        layer.bias.fill_(5.0)
    with pytest.warns(UserWarning, match="has no elements"):
        itorch.initialize(layer, "he_normal", bias="torch_default", rng=0)
    assert torch.equal(layer.bias.detach(), torch.zeros(4))
