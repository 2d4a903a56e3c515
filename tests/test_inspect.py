"""Inspect: parsing, verdicts, the network at init against the mean-field theory, and the
`inspect` and `theory` commands end to end."""

import csv
import re

import numpy as np
import pytest

from initlab import data, theory
from initlab.cli import main
from initlab.inspect import inspect_network, parse_layers, predicted_std, verdict

PNG = b"\x89PNG\r\n\x1a\n"


# --- parse_layers ---------------------------------------------------------------------------

def test_parse_layers_expands_repeats():
    assert parse_layers("784,512x3,10") == [784, 512, 512, 512, 10]
    assert parse_layers("64, 32x2 ,10") == [64, 32, 32, 10]
    assert parse_layers("2,1") == [2, 1]


@pytest.mark.parametrize("spec,message", [
    ("784", "needs an input and an output width"),
    ("a,b", "must look like 784,512x10,10"),
    ("784,0,10", "all >= 1"),
    ("784,512xq,10", "must look like"),
])
def test_parse_layers_errors_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_layers(spec)
    assert f"layers={spec!r}" in str(err.value)


def test_parse_layers_rejects_a_negative_repeat():
    with pytest.raises(ValueError, match="512x-2"):
        parse_layers("784,512x-2,10")


# --- verdict --------------------------------------------------------------------------------

HEALTHY = {"act_std": 0.8, "dead_fraction": 0.0, "saturated_fraction": float("nan"),
           "nonfinite_fraction": 0.0}


@pytest.mark.parametrize("change,expected", [
    ({}, "healthy"),
    ({"nonfinite_fraction": 0.01}, "overflow"),
    ({"nonfinite_fraction": 0.01, "dead_fraction": 1.0, "act_std": float("nan")}, "overflow"),
    ({"dead_fraction": 0.5}, "dead"),
    ({"dead_fraction": 0.49}, "healthy"),
    ({"dead_fraction": 0.9, "act_std": 1e-5}, "dead"),
    ({"saturated_fraction": 0.6}, "saturated"),
    ({"saturated_fraction": 0.4}, "healthy"),
    ({"act_std": 1e-3}, "vanishing"),
    ({"act_std": 1e-2}, "healthy"),  # the thresholds are strict
    ({"act_std": 1e3}, "exploding"),
    ({"act_std": 100.0}, "healthy"),
])
def test_verdict(change, expected):
    assert verdict({**HEALTHY, **change}) == expected


# --- inspect_network ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def he_relu():
    return inspect_network("64,128x6,10", activation="relu", init="he_normal", replicas=3,
                           batch=128)


def test_inspect_he_relu_is_healthy_and_follows_the_theory(he_relu):
    summary = he_relu.summary
    assert len(summary) == 7 and [row["layer"] for row in summary] == list(range(7))
    assert len(he_relu.table) == 7 * 3
    hidden = summary[:-1]
    assert all(row["verdict"] == "healthy" for row in hidden)
    assert all(row["units"] == 128 and row["activation"] == "relu" for row in hidden)
    assert summary[-1]["activation"] == "softmax" and np.isnan(summary[-1]["theory_std"])
    measured = np.array([row["act_std"] for row in hidden])
    predicted = np.array([row["theory_std"] for row in hidden])
    error = np.abs(measured / predicted - 1)
    # width 128 is far from the infinite-width limit; finite-width fluctuations grow with
    # depth (this seed: 0.5 % at layer 0, 6.5 % at layer 5; other seeds reach ~15 %)
    assert np.all(error < 0.15)
    assert error[0] < 0.03
    # He keeps the signal: the critical ReLU prediction is the same at every depth
    assert np.ptp(predicted) / predicted.mean() < 0.05
    for row in hidden:
        assert row["act_std_min"] <= row["act_std"] <= row["act_std_max"]
        assert row["act_std_sd"] > 0  # three different draws
        assert row["dead_fraction"] < 0.1 and np.isnan(row["saturated_fraction"])
        assert row["distinct_units"] == 128


def test_theory_comparison_can_fail(he_relu):
    X = data.gaussian(128, 64, 10, rng=0).X_train  # the probe batch inspect_network drew
    measured = np.array([row["act_std"] for row in he_relu.summary[:-1]])
    right = predicted_std(he_relu.model, "relu", X)
    np.testing.assert_allclose(right, [row["theory_std"] for row in he_relu.summary[:-1]],
                               rtol=1e-12)
    # negative control: the tanh prediction for the same weights misses the relu network
    wrong = predicted_std(he_relu.model, "tanh", X)
    assert np.all(np.abs(measured / wrong - 1) > 0.15)


def test_inspect_unit_normal_weights_explode_at_depth():
    result = inspect_network("64,64x20,10", init={"name": "normal", "std": 1.0}, replicas=2,
                             batch=64)
    verdicts = [row["verdict"] for row in result.summary[:-1]]
    assert len(verdicts) == 20
    assert all(v in ("exploding", "overflow") for v in verdicts[5:])
    stds = [row["act_std"] for row in result.summary[:-1]]
    assert stds[10] > 1e6 * stds[0]


def test_inspect_small_normal_weights_vanish():
    result = inspect_network("64,64x20,10", init={"name": "normal", "std": 0.01}, replicas=2,
                             batch=64)
    verdicts = [row["verdict"] for row in result.summary[:-1]]
    assert all(v == "vanishing" for v in verdicts[2:])
    assert result.summary[-2]["act_std"] < 1e-10


def test_inspect_tanh_with_unit_normal_weights_saturates():
    result = inspect_network("64,64x6,10", activation="tanh", init={"name": "normal", "std": 1.0},
                             replicas=2, batch=64)
    for row in result.summary[:-1]:
        assert row["verdict"] == "saturated"
        assert row["saturated_fraction"] > 0.5
    # control: the critical tanh init is not saturated
    calm = inspect_network("64,64x6,10", activation="tanh", init="glorot_normal", replicas=2,
                           batch=64)
    assert all(row["verdict"] == "healthy" for row in calm.summary[:-1])


def test_inspect_on_digits_needs_64_inputs():
    result = inspect_network("64,32,10", data="digits", replicas=2, batch=64)
    assert "digits" in result.data and len(result.summary) == 2
    with pytest.raises(ValueError, match=r"start with the data's 64 features \(digits\); got 784"):
        inspect_network("784,32,10", data="digits", replicas=2, batch=64)


def _idx_folder(folder, labels):
    """Four MNIST-format files: random 2x3 images, the given labels in both splits."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (len(labels), 2, 3), dtype=np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
            + images.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + bytes(labels))
    return folder


def test_inspect_refuses_labels_the_output_layer_cannot_hold(tmp_path, capsys, wide):
    folder = _idx_folder(tmp_path / "mnist", [200] * 8)
    message = (f"labels of data={str(folder)!r} ({folder.name}: {folder}) must be in 0..9 for "
               f"the last layer's 10 outputs; got label 200")
    with pytest.raises(ValueError) as err:
        inspect_network("6,4,10", data=str(folder), replicas=2, batch=8)
    assert str(err.value) == message
    assert main(["inspect", "--layers", "6,4,10", "--data", str(folder), "--replicas", "2",
                 "--batch", "8"]) == 2
    assert message in " ".join(capsys.readouterr().out.split())  # rich wraps at spaces
    # digits has 10 classes: two outputs cannot hold labels 2..9
    with pytest.raises(ValueError, match=r"must be in 0\.\.1 for the last layer's 2 outputs; "
                                         r"got labels 2, 3, 4, 5, 6, \.\.\.$"):
        inspect_network("64,8,2", data="digits", replicas=1, batch=64)
    # control: the same folder with labels in range is inspected
    folder = _idx_folder(tmp_path / "ok", [0, 9] * 4)
    result = inspect_network("6,4,10", data=str(folder), replicas=2, batch=8)
    assert len(result.summary) == 2


def test_inspect_argument_errors():
    with pytest.raises(ValueError, match="replicas=0"):
        inspect_network("8,4,2", replicas=0)
    with pytest.raises(ValueError, match="batch=1"):
        inspect_network("8,4,2", batch=1)


# --- the commands ---------------------------------------------------------------------------

def _cells(out: str, name: str) -> list[str]:
    """The cells of the table row whose first cell is ``name``."""
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{out}")


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps narrower tables


def test_inspect_command_prints_verdicts_and_writes_figures(tmp_path, capsys, wide):
    args = ["inspect", "--layers", "64,32x3,10", "--replicas", "2", "--batch", "64",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "verdict" in out
    for layer in range(4):
        assert _cells(out, str(layer))[-1] == "healthy"
    assert _cells(out, "0")[1] == "32" and _cells(out, "3")[1] == "10"
    for name in ("std_vs_depth.png", "histograms.png", "layers.csv"):
        assert f"wrote {tmp_path / name}" in out.replace("\n", "")
    for name in ("std_vs_depth.png", "histograms.png"):
        content = (tmp_path / name).read_bytes()
        assert content.startswith(PNG) and len(content) > 1000
    with (tmp_path / "layers.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 2 and {r["layer"] for r in rows} == {"0", "1", "2", "3"}
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    assert main([*args, "--seed", "1"]) == 0  # same folder: nothing is overwritten
    capsys.readouterr()
    for name, content in first.items():
        assert (tmp_path / name).read_bytes() == content
    assert (tmp_path / "std_vs_depth-2.png").read_bytes().startswith(PNG)
    assert (tmp_path / "histograms-2.png").read_bytes().startswith(PNG)
    assert (tmp_path / "layers-2.csv").read_bytes() != first["layers.csv"]  # the new seed's
    assert len(list(tmp_path.iterdir())) == 6


def test_inspect_command_errors_exit_2(capsys, wide):
    assert main(["inspect", "--layers", "64,32,10", "--activation", "rleu"]) == 2
    assert "did you mean 'relu'" in capsys.readouterr().out
    assert main(["inspect", "--layers", "784"]) == 2
    assert "layers='784'" in capsys.readouterr().out


def test_theory_command_relu_is_critical_at_root_2(capsys, wide):
    assert main(["theory", "--activation", "relu"]) == 0
    out = capsys.readouterr().out
    assert _cells(out, "critical sigma_w")[1] == "1.41421"
    assert _cells(out, "chi_1")[1:3] == ["1", "critical"]
    assert abs(theory.critical_sigma_w("relu") - 2**0.5) < 1e-9


def test_theory_command_tanh_is_critical_at_1(capsys, wide):
    assert main(["theory", "--activation", "tanh"]) == 0
    out = capsys.readouterr().out
    assert _cells(out, "critical sigma_w")[1] == "1"
    assert _cells(out, "chi_1")[1:3] == ["1", "critical"]


def test_theory_command_off_criticality(capsys, wide):
    assert main(["theory", "--activation", "tanh", "--sigma-w", "1.5"]) == 0
    out = capsys.readouterr().out
    assert _cells(out, "sigma_w")[1] == "1.5"
    assert _cells(out, "chi_1")[2] == "chaotic (exploding)"
    assert main(["theory", "--activation", "tanh", "--sigma-w", "0.5"]) == 0
    assert _cells(capsys.readouterr().out, "chi_1")[2] == "ordered (vanishing)"


def test_theory_command_relu_depth_scales_diverge_at_criticality(capsys, wide):
    assert main(["theory", "--activation", "relu"]) == 0
    out = capsys.readouterr().out
    assert _cells(out, "xi_c")[1] == "inf"
    assert _cells(out, "xi_q")[1] == "inf"


def test_theory_command_bad_activation(capsys, wide):
    assert main(["theory", "--activation", "rleu"]) == 2
    out = capsys.readouterr().out
    assert "did you mean 'relu'" in out and "initlab theory" in out
