"""The coordinate check: SP's readout grows with width after one SGD step, a μP MLP stays flat,
and both are flat at init; plus the arithmetic (slopes, verdicts) and the read-only contract."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from initlab.probes import Table  # noqa: E402
from initlab.torch.coordcheck import CoordCheck, coordcheck  # noqa: E402

D, C, B = 16, 10, 64
WIDTHS = [64, 128, 256, 512, 1024]
LR, BASE_WIDTH = 0.5, 64
# Measured with these settings (seeds 0, 1; steps 0, 1, 2): μP's steepest |slope| is 0.086
# (readout, step 1; 0.046 with 4 seeds: seed noise at width 64), SP's readout slope is 0.527
# at step 1 and 0.407 at step 2. TOL sits between them with room on both sides.
TOL = 0.15
# SP's readout after one update: logits = O(1) init + lr * ||h||^2 * g = O(width), so on
# log-log axes the slope heads to 1 as the update dominates; 0.527 measured. 2 * TOL = 0.3
# fails a flat line by a wide margin and still passes the measured one.
SP_MIN_SLOPE = 2 * TOL


def data():
    g = torch.Generator().manual_seed(123)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


def sp_mlp(n):
    """Standard parametrization: PyTorch's default init (fan-in uniform), one lr."""
    return nn.Sequential(nn.Linear(D, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU(), nn.Linear(n, C))


def mup_mlp(n):
    """μP for SGD (TP V, Table 3): input and hidden weights N(0, 1/fan_in); the readout
    zero-initialised (TP V allows 0 for the 1/fan_in^2 variance, and it keeps step 0 flat)."""
    m = nn.Sequential(nn.Linear(D, n, bias=False), nn.ReLU(), nn.Linear(n, n, bias=False),
                      nn.ReLU(), nn.Linear(n, C, bias=False))
    with torch.no_grad():
        nn.init.normal_(m[0].weight, std=D ** -0.5)
        nn.init.normal_(m[2].weight, std=n ** -0.5)
        nn.init.zeros_(m[4].weight)
    return m


def mup_lr(name, n):
    """TP V Table 3, SGD learning rates: input ∝ fan_out, hidden constant, output ∝ 1/fan_in."""
    return {"0": LR * n / BASE_WIDTH, "2": LR, "4": LR * BASE_WIDTH / n}[name.split(".")[0]]


@pytest.fixture(scope="module")
def runs():
    X, y = data()
    return {"sp": coordcheck(sp_mlp, WIDTHS, X, y, steps=3, lr=LR),
            "mup": coordcheck(mup_mlp, WIDTHS, X, y, steps=3, lr=mup_lr)}


def slope(check, layer, step):
    return float(check.slopes().where(layer=layer, step=step).column("slope")[0])


def test_table_is_tidy(runs):
    check = runs["sp"]
    assert check.table.columns == ["layer", "width", "seed", "step", "scale"]
    assert check.layers == ["0", "2", "4"] and check.widths == WIDTHS
    assert len(check.table) == 3 * len(WIDTHS) * 2 * 3
    assert len(check.slopes()) == 3 * 3


def test_sp_readout_grows_after_one_step(runs):
    check = runs["sp"]
    assert check.verdicts(TOL)["4"] == "grows"
    assert slope(check, "4", 1) > SP_MIN_SLOPE


def test_mup_is_flat_at_every_step(runs):
    check = runs["mup"]
    assert check.verdicts(TOL) == {"0": "flat", "2": "flat", "4": "flat"}
    # not flat by doing nothing: the zero readout has moved by step 1
    assert np.all(check.mean_scale("4", 0) == 0) and np.all(check.mean_scale("4", 1) > 0)


def test_hidden_layers_flat_at_init(runs):
    for check in runs.values():
        for layer in ("0", "2"):
            assert abs(slope(check, layer, 0)) <= TOL


def test_step_zero_is_the_initial_forward_pass():
    X, y = data()
    check = coordcheck(sp_mlp, [8, 16], X, y, steps=2, seeds=1)
    torch.manual_seed(0)
    model = sp_mlp(16)
    with torch.no_grad():
        want = float(model[0](X).abs().mean())
    got = check.table.where(layer="0", width=16, seed=0, step=0).column("scale")[0]
    assert got == pytest.approx(want, rel=1e-6)


def test_slopes_and_verdicts_on_known_power_laws():
    rows = [{"layer": name, "width": w, "seed": 0, "step": 0, "scale": 3.0 * w ** p}
            for name, p in [("up", 0.5), ("down", -1.0), ("flat", 0.0)] for w in (10, 100, 1000)]
    check = CoordCheck(Table(rows))
    s = {r["layer"]: r["slope"] for r in check.slopes().rows}
    assert s == pytest.approx({"up": 0.5, "down": -1.0, "flat": 0.0}, abs=1e-12)
    assert check.verdicts(0.1) == {"up": "grows", "down": "shrinks", "flat": "flat"}
    assert check.verdicts(1.5) == {"up": "flat", "down": "flat", "flat": "flat"}


def test_read_only():
    X, y = data()
    X0, y0, rng = X.clone(), y.clone(), torch.get_rng_state()
    check = coordcheck(sp_mlp, [8, 16], X, y, steps=3, optimizer="adam", lr=1e-2)
    assert torch.equal(X, X0) and torch.equal(y, y0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(check.table) == 3 * 2 * 2 * 3


def test_figure(tmp_path, runs):
    path = runs["mup"].figure(tmp_path / "coord.png")
    assert path.exists() and path.stat().st_size > 1000


@pytest.mark.parametrize("kwargs, word", [
    (dict(widths=[8]), "widths"), (dict(steps=0), "steps"), (dict(seeds=0), "seeds"),
    (dict(optimizer="rmsprop"), "optimizer")])
def test_errors_name_the_argument(kwargs, word):
    X, y = data()
    args = dict(widths=[8, 16]) | kwargs
    with pytest.raises(ValueError, match=word):
        coordcheck(sp_mlp, args.pop("widths"), X, y, **args)
