"""The PyTorch adapter on real modules: layouts, fans, distributions, LSUV, probes."""

import math

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from initlab import fans  # noqa: E402
from initlab import torch as itorch  # noqa: E402


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
    assert first["act_std"] == pytest.approx(out.std(), rel=1e-12)
    assert np.all(np.isfinite(table.column("grad_std")))
    assert table.rows[1]["weight_grad_std"] == pytest.approx(
        model[2].weight.grad.std().item(), rel=1e-12)


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
    assert main(["inspect", "--torch", "factories:cnn", "--init", "zeros",
                 "--input-shape", "3,8,8"]) == 0
    assert "dead" in capsys.readouterr().out  # zero weights: every output is 0
    assert main(["inspect", "--torch", "factories:cnn"]) == 2
    assert "--input-shape" in capsys.readouterr().out
    assert main(["inspect", "--torch", "factories:not_a_module"]) == 2
    assert "not a torch.nn.Module" in capsys.readouterr().out
    assert main(["inspect", "--torch", "factories"]) == 2
    assert "package.module:function" in capsys.readouterr().out
