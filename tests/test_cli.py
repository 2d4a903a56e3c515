"""The command line: each command runs end to end and says what went wrong."""

import subprocess
import sys

import pytest

import initlab
from initlab import initializers
from initlab.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"initlab {initlab.__version__}"


def test_list_shows_every_initializer_with_its_aliases(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in initializers.available():
        assert name in out
    assert "kaiming_normal" in out and "xavier_uniform" in out


def test_list_filters_by_pattern(capsys):
    assert main(["list", "he_*"]) == 0
    out = capsys.readouterr().out
    assert "he_normal" in out and "he_uniform" in out and "glorot" not in out


def test_gradcheck_passes_and_reports_every_combination(capsys):
    assert main(["gradcheck", "--activation", "tanh", "--loss", "mse"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 combinations pass" in out


def test_gradcheck_exits_1_when_backward_is_wrong(capsys, monkeypatch):
    from initlab.nn import activations

    monkeypatch.setattr(activations.Sigmoid, "backward", lambda self, z, a, da: da * a)
    assert main(["gradcheck", "--activation", "sigmoid", "--loss", "mse"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_bad_arguments_are_named(capsys):
    assert main(["gradcheck", "--activation", "rleu"]) == 2
    assert "did you mean 'relu'" in capsys.readouterr().out
    assert main(["gradcheck", "--layers", "4,x"]) == 2
    assert "layers must be comma-separated ints" in capsys.readouterr().out


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "initlab.cli", "--help"], capture_output=True,
                          text=True, check=True)
    assert "gradcheck" in done.stdout and "list" in done.stdout


def test_reproduce_runs_every_card_and_writes_the_report(tmp_path, capsys):
    import json

    from initlab import experiments

    assert main(["reproduce", "--size", "tiny", "--seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Report:" in out and "index.html" in out
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert [c["name"] for c in results["cards"]] == experiments.names()
    assert all(claim["verdict"] in ("holds", "fails") for card in results["cards"]
               for claim in card["claims"])
    assert (folder / "index.html").is_file() and (folder / "report.md").is_file()
    # the report is re-rendered from the folder alone
    (folder / "index.html").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "index.html").is_file()


def test_run_and_report_name_bad_input(capsys, tmp_path):
    assert main(["run", "moonz", "--out", str(tmp_path)]) == 2
    assert "did you mean 'moons'" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().out
    assert main(["reproduce", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().out


def test_an_interrupted_reproduce_says_so_and_exits_130(tmp_path, capsys, monkeypatch):
    import json

    from initlab.experiments import gradcheck

    def interrupted(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradcheck.card, "measure_fn", interrupted)
    assert main(["run", "gradcheck", "--out", str(tmp_path)]) == 130
    out = capsys.readouterr().out
    assert "0 of 1 cards finished" in out and "Interrupted after" in out
    assert "during card gradcheck" in out  # where, and how long, not "(0 s)"
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "results.json").read_text())["interrupted"] is True


# --- the boundary: every bad input a clear message, exit 2, nothing half-written ----------

def test_out_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    assert main(["run", "logistic", "--size", "tiny", "--out", str(target)]) == 2
    out = capsys.readouterr().out
    assert "--out must be a folder" in out and "a-file" in out and "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_out_that_is_a_run_gets_a_sibling_run_not_a_nested_one(tmp_path):
    assert main(["run", "logistic", "--size", "tiny", "--out", str(tmp_path)]) == 0
    (first,) = tmp_path.iterdir()
    assert main(["run", "logistic", "--size", "tiny", "--out", str(first)]) == 0
    runs = sorted(p for p in tmp_path.iterdir())
    assert len(runs) == 2 and all((p / "results.json").is_file() for p in runs)
    assert not [p for p in first.iterdir() if p.name.startswith("run-")]


def test_an_unwritable_out_is_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["run", "logistic", "--size", "tiny", "--out", str(tmp_path / "ro")]) == 2
    out = capsys.readouterr().out
    assert "cannot write" in out and "Read-only file system" in out and "ro" in out


def test_bad_numbers_are_refused_naming_the_argument_and_the_value(tmp_path, capsys):
    for argv, message in ((["run", "fixup", "--depth", "-5"], "--depth must be >= 1"),
                          (["run", "fixup", "--depth", "0"], "got --depth 0"),
                          (["run", "moons", "--depth", "5"], "--depth applies to the fixup"),
                          (["gradcheck", "--samples", "0"], "--samples must be >= 1"),
                          (["gradcheck", "--samples", "-1"], "got --samples -1")):
        extra = ["--out", str(tmp_path)] if argv[0] == "run" else []
        assert main([*argv, *extra]) == 2, argv
        out = capsys.readouterr().out
        assert message in out and "Traceback" not in out, (argv, out)
    assert not list(tmp_path.iterdir()), "refused before any run folder is created"


def test_report_of_an_empty_results_file_names_the_file(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "results.json" in out and "not an initlab results file" in out


def test_list_prints_bracketed_text_as_text(capsys):
    assert main(["list", "trunc_normal_abs"]) == 0
    assert "[a, b]" in capsys.readouterr().out


def test_an_interrupt_while_compiling_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from initlab.nn import kernels

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kernels, "warm_up", interrupted)
    assert main(["run", "logistic", "--out", str(tmp_path)]) == 130
    assert "while compiling the kernels" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


_SERVER_PROBE = """
from concurrent.futures import ProcessPoolExecutor
from initlab import cli_runs
from initlab.nn.parallel import context

cli_runs._start_worker_server()
with ProcessPoolExecutor(1, mp_context=context()) as pool:
    preloaded = pool.submit(eval, "all(m in __import__('sys').modules for m in "
                                  "('initlab.experiments', 'sklearn.datasets'))").result()
print(preloaded)
"""


def test_the_card_workers_start_with_the_cards_imported():
    """reproduce starts the forkserver before it imports the cards itself, with them preloaded:
    the workers it forks have them (a worker of a plain forkserver imports them itself)."""
    out = subprocess.run([sys.executable, "-c", _SERVER_PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True"]
