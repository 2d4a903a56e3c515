"""initlab doctor: read-only, recognises every torch.nn.init scheme, flags and fixes a bad MLP."""

import json
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from initlab.cli import main  # noqa: E402
from initlab.torch.doctor import CANDIDATES, attribute_path, doctor, recognize  # noqa: E402

I = nn.init  # noqa: E741


def bad_mlp(depth: int = 20, width: int = 64) -> nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    mods: list[nn.Module] = []
    for _ in range(depth):
        layer = nn.Linear(width, width)
        I.normal_(layer.weight, 0.0, 1.0, generator=gen)  # N(0, 1): x sqrt(width / 2) per layer
        I.zeros_(layer.bias)
        mods += [layer, nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def he_mlp(depth: int = 20, width: int = 64) -> nn.Sequential:
    model, gen = bad_mlp(depth, width), torch.Generator().manual_seed(1)
    for m in model:
        if isinstance(m, nn.Linear):
            I.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
    return model


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Dropout(0.5), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def batch(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_doctor_is_read_only():
    model = small_cnn()
    model.train()  # BatchNorm updates its running stats in train mode: doctor must restore them
    X = batch(16, 3, 12, 12)
    for p in model.parameters():  # grads present before: left as they were
        p.grad = torch.full_like(p, 0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    rng = torch.get_rng_state()
    report = doctor(model, X)
    assert report.summary["layers"] == 3
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    for key, p in model.named_parameters():
        assert torch.equal(p.grad, grads[key]), key
    assert torch.equal(torch.get_rng_state(), rng)  # Dropout drew from a forked stream
    assert model.training


# (200, 500) and (160, 64, 3, 3): fan_in / fan_out of 2.5, so no two candidates draw within 10 %
# of each other's std (at fan_in = 2 fan_out, He's fan_in ReLU IS Glorot's fan_out linear)
SCHEMES = {
    "kaiming_uniform_(a=math.sqrt(5))": lambda w, g: I.kaiming_uniform_(w, a=math.sqrt(5),
                                                                         generator=g),
    "xavier_uniform_()": lambda w, g: I.xavier_uniform_(w, generator=g),
    "xavier_normal_()": lambda w, g: I.xavier_normal_(w, generator=g),
    'xavier_uniform_(gain=nn.init.calculate_gain("tanh"))':
        lambda w, g: I.xavier_uniform_(w, gain=I.calculate_gain("tanh"), generator=g),
    'xavier_normal_(gain=nn.init.calculate_gain("tanh"))':
        lambda w, g: I.xavier_normal_(w, gain=I.calculate_gain("tanh"), generator=g),
    **{f'kaiming_{d}_(mode="{mode}", nonlinearity="{nl}")':
       (lambda w, g, d=d, mode=mode, nl=nl:
        getattr(I, f"kaiming_{d}_")(w, mode=mode, nonlinearity=nl, generator=g))
       for d in ("uniform", "normal") for mode in ("fan_in", "fan_out")
       for nl in ("relu", "linear")},
    "orthogonal_()": lambda w, g: I.orthogonal_(w, generator=g),
    "orthogonal_(gain=1.414)": lambda w, g: I.orthogonal_(w, gain=1.414, generator=g),
    "zeros_()": lambda w, g: I.zeros_(w),
    "constant_(0.5)": lambda w, g: I.constant_(w, 0.5),
}
# the fixed-std normals of model zoos (BERT / GPT-2's N(0, 0.02), ...)
SCHEMES.update({f"normal_(std={std:g})": (lambda w, g, std=std: I.normal_(w, 0.0, std,
                                                                          generator=g))
                for std in (0.02, 0.01, 0.001)})


def test_every_candidate_is_in_the_test():
    assert {c.code for c in CANDIDATES} <= set(SCHEMES)


@pytest.mark.parametrize("shape", [(200, 500), (160, 64, 3, 3)])
@pytest.mark.parametrize("code", list(SCHEMES))
def test_recognizes_each_torch_init(code, shape):
    w = torch.empty(shape)
    SCHEMES[code](w, torch.Generator().manual_seed(3))
    found = recognize(w)
    assert found.code == code, (found, code)
    if found.p_value is not None:
        assert found.p_value > 1e-4
        assert found.also == ()  # shapes chosen so that nothing else fits


def test_the_default_of_torch_layers_is_recognised():
    torch.manual_seed(0)
    for layer in (nn.Linear(300, 120), nn.Conv2d(32, 80, 3)):
        assert recognize(layer.weight).code == "kaiming_uniform_(a=math.sqrt(5))"


def test_unknown_when_no_candidate_fits():
    w = torch.empty(64, 64)
    I.normal_(w, 0.0, 0.3, generator=torch.Generator().manual_seed(0))
    assert recognize(w).code == "unknown"
    I.uniform_(w, -0.5, 0.5, generator=torch.Generator().manual_seed(0))  # wider than any bound
    assert recognize(w).code == "unknown"
    # negative control: a normal draw at He uniform's std fits He normal, not He uniform
    w = torch.empty(200, 500)
    I.normal_(w, 0.0, math.sqrt(2 / 500), generator=torch.Generator().manual_seed(0))
    found = recognize(w)
    assert found.code == 'kaiming_normal_(mode="fan_in", nonlinearity="relu")'
    assert not any("uniform" in code for code in found.also)


def test_ties_are_listed():  # fan_in = 2 fan_out: He fan_in ReLU == He fan_out linear
    w = torch.empty(128, 256)
    I.kaiming_normal_(w, nonlinearity="relu", generator=torch.Generator().manual_seed(0))
    found = recognize(w)
    assert {found.code, *found.also} >= {'kaiming_normal_(mode="fan_in", nonlinearity="relu")',
                                         'kaiming_normal_(mode="fan_out", nonlinearity="linear")'}


def test_attribute_path():
    model = nn.Module()
    model.layer3 = nn.Sequential(nn.Module())
    model.layer3[0].conv1 = nn.Conv2d(1, 1, 1)
    model.heads = nn.ModuleDict({"cls": nn.Linear(1, 1)})
    assert attribute_path(model, "layer3.0.conv1") == "model.layer3[0].conv1"
    assert attribute_path(model, "heads.cls") == "model.heads['cls']"
    assert attribute_path(model, "") == "model"


def test_gains_match_the_layer_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48, bias=False))
    X = batch(256, 32)
    row = doctor(model, X).layers[0]
    W = model[0].weight.detach().double()
    z = X.double() @ W.T
    assert row["forward_gain"] == pytest.approx(float(z.std(correction=0) / X.std(correction=0)),
                                                rel=1e-6)
    # L = sum(z^2) / 2: dL/dz = z, dL/dx = z W
    assert row["backward_gain"] == pytest.approx(
        float((z @ W).std(correction=0) / z.std(correction=0)), rel=1e-6)
    sigma_w = math.sqrt(32 * float((W**2).mean()))
    assert row["expected_std"] == pytest.approx(sigma_w * float(X.double().pow(2).mean().sqrt()))
    assert row["moment_gain"] == pytest.approx(sigma_w**2)  # linear: sigma_w^2


def test_bad_mlp_explodes_and_its_fix_heals_it():
    model, X = bad_mlp(), batch(128, 64)
    report = doctor(model, X)
    assert report.summary["layers"] == 20
    assert report.summary["verdicts"]["exploding"] >= 15
    assert report.summary["worst"]["verdict"] == "exploding"
    assert all(row["init"]["code"] == "unknown" for row in report.layers)
    relu = report.layers[5]
    assert relu["moment_gain"] == pytest.approx(32, rel=0.15)  # 64 x 1 x 1/2
    assert relu["forward_gain"] > 5
    assert relu["fix"]["code"].startswith(f"nn.init.kaiming_normal_({relu['path']}.weight")
    assert "gain per layer 1" in relu["fix"]["effect"]
    torch.manual_seed(0)
    exec(report.fix, {"model": model, "nn": nn, "torch": torch})
    healed = doctor(model, X)
    assert healed.summary["verdicts"]["healthy"] == 20, healed.layers
    assert all(0.5 < row["moment_gain"] < 2 for row in healed.layers)


def test_he_mlp_is_healthy_and_recognised():
    report = doctor(he_mlp(), batch(128, 64))
    assert report.summary["verdicts"]["healthy"] == 20
    assert report.fix == ""
    for row in report.layers:
        assert "kaiming_normal_" in row["init"]["code"] or any(
            "kaiming_normal_" in a for a in row["init"]["also"])


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "doctor_factories.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "from test_doctor import bad_mlp, he_mlp, small_cnn\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_cli_json_has_one_entry_per_layer(factories, capsys):
    assert main(["doctor", "doctor_factories:small_cnn", "--input-shape", "3,12,12",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["layers"] == 3 == len(doc["layers"])
    assert [row["path"] for row in doc["layers"]] == ["model[0]", "model[4]", "model[8]"]
    assert {"init", "forward_gain", "backward_gain", "verdict", "fix"} <= set(doc["layers"][0])


def test_cli_fail_on_sets_the_exit_code(factories, capsys):
    assert main(["doctor", "doctor_factories:bad_mlp", "--fail-on", "exploding"]) == 1
    out = capsys.readouterr().out
    assert "exploding" in out and "kaiming_normal_" in out
    assert main(["doctor", "doctor_factories:he_mlp", "--fail-on", "exploding,dead"]) == 0
    assert main(["doctor", "doctor_factories:bad_mlp"]) == 0  # no --fail-on: a report


def test_cli_bad_arguments_exit_2_naming_them(factories, capsys):
    assert main(["doctor", "doctor_factories:bad_mlp", "--fail-on", "explodng"]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "--fail-on" in out and "explodng" in out and "did you mean 'exploding'" in out
    assert main(["doctor", "doctor_factories:small_cnn"]) == 2
    assert "--input-shape" in " ".join(capsys.readouterr().out.split())
    assert main(["doctor", "doctor_factories:small_cnn", "--input-shape", "3,x"]) == 2
    assert "3,x" in capsys.readouterr().out


def test_an_in_place_activation_after_a_layer_leaves_its_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=True), nn.Linear(32, 4))
    X = batch(64, 16)
    row = doctor(model, X).layers[0]
    with torch.no_grad():
        z = X.double() @ model[0].weight.double().T + model[0].bias.double()
    assert row["out_std"] == pytest.approx(float(z.std(correction=0)), rel=1e-6)  # not relu(z)
    # dL/dz is relu'(z) times dL/drelu(z): the gradient at z, not at the in-place result
    with torch.no_grad():
        W2 = model[2].weight.double()
        dz = ((z.clamp(min=0) @ W2.T + model[2].bias.double()) @ W2) * (z > 0)
    assert row["grad_out_std"] == pytest.approx(float(dz.std(correction=0)), rel=1e-6)


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.branch = nn.Linear(width, width, bias=False)

    def forward(self, x):
        return x + self.branch(x)


def test_backward_gain_is_the_layers_own_not_the_skips():
    torch.manual_seed(0)
    model, X = Residual(32), batch(128, 32)
    row = doctor(model, X).layers[0]
    with torch.no_grad():
        W = model.branch.weight.double()
        y = X.double() + X.double() @ W.T  # L = sum(y^2) / 2: dL/dz = y, through the layer y W
    assert row["grad_out_std"] == pytest.approx(float(y.std(correction=0)), rel=1e-6)
    assert row["backward_gain"] == pytest.approx(
        float((y @ W).std(correction=0) / y.std(correction=0)), rel=1e-6)  # the skip left out


def test_a_norm_right_after_a_layer_sets_its_scale_and_no_fix_is_given():
    torch.manual_seed(0)
    X = batch(64, 16)
    for norm in (nn.LayerNorm(32), nn.BatchNorm1d(32)):
        model = nn.Sequential(nn.Linear(16, 32), norm, nn.ReLU(), nn.Linear(32, 4))
        with torch.no_grad():
            model[0].weight.mul_(1e4)
        row = doctor(model, X).layers[0]
        assert row["stats_verdict"] == "exploding" and row["verdict"] == "healthy"
        assert row["followed_by"] == ["model[1]"] and row["fix"] is None
    # negative controls: in eval mode BatchNorm applies its running statistics (fresh: the
    # identity), and without a norm nothing rescales the output: exploding, with a fix
    model.eval()
    row = doctor(model, X).layers[0]
    assert row["verdict"] == "exploding" and row["followed_by"] == [] and row["fix"]
    del model[1]
    row = doctor(model, X).layers[0]
    assert row["verdict"] == "exploding" and row["fix"]


def test_ties_draw_the_same_distribution_and_the_model_names_them_alike():
    w = torch.empty(128, 256)  # fan_in = 2 fan_out: He fan_in ReLU draws as He fan_out linear
    I.kaiming_normal_(w, nonlinearity="relu", generator=torch.Generator().manual_seed(0))
    found = recognize(w)
    assert 'kaiming_normal_(mode="fan_out", nonlinearity="linear")' in (found.code, *found.ties)
    assert set(found.ties) <= set(found.also)
    assert not any("uniform" in t or "xavier" in t for t in found.ties)
    # He fan_out ReLU throughout: the first layer ties with fan_in ReLU (square), the last with
    # fan_in linear (fan_out = 2 fan_in), the middle one fits it alone: all named fan_out ReLU
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                          nn.Linear(32, 64))
    gen = torch.Generator().manual_seed(2)
    for m in model[::2]:
        I.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
    rows = doctor(model, batch(64, 64)).layers
    assert [r["init"]["code"] for r in rows] == [
        'kaiming_normal_(mode="fan_out", nonlinearity="relu")'] * 3


def test_a_chain_after_a_norm_is_judged_and_its_note_agrees():
    """conv -> BN -> ReLU -> conv -> ReLU -> Linear: the first conv is set by its norm (no
    fix); the last two form a chain with no norm between that reaches the output, so their
    mean-field gain is judged, and no note says otherwise."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4))
    rows = {r["path"]: r for r in doctor(model, torch.randn(16, 3, 16, 16)).layers}
    assert rows["model[0]"]["fix"] is None and "BatchNorm2d" in rows["model[0]"]["note"]
    for path in ("model[3]", "model[6]"):
        assert rows[path]["fix"] is not None  # torch's default: moment gain ~ 1/3 per layer
        assert "not judged" not in (rows[path]["note"] or "")
