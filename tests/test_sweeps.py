"""initlab sweep: the grid, seeds that do not depend on where a task ran, shards, resume,
retries, the local process pool, the CLI and the heatmaps."""

import json
import math
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from initlab.cli import main
from initlab.data import teacher_student
from initlab.sweeps import runner
from initlab.sweeps.grid import Grid, Task, parse_axis, replica_stream
from initlab.sweeps.task import run_task

# a grid whose tasks take a fraction of a second
TINY = dict(sigma_w2=(1.0, 2.5), sigma_b2=(0.05,), depth=(2, 3), width=(8,), steps=(20,),
            seeds=2, batch_size=64, probe=16)


def tiny(**changes) -> Grid:
    return Grid(**{**TINY, **changes})


def said(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def table(folder) -> str:
    return (folder / "results.csv").read_text()


# --- the grid -------------------------------------------------------------------------------

def test_parse_axis_ranges_lists_and_errors():
    assert parse_axis("sigma_w2", "1:4:13", float) == tuple(np.linspace(1, 4, 13).round(12))
    assert parse_axis("sigma_w2", "1:4:13", float)[1] == 1.25
    assert parse_axis("depth", "5,10, 20", int) == (5, 10, 20)
    assert parse_axis("depth", "10:40:4", int) == (10, 20, 30, 40)
    with pytest.raises(ValueError, match="--depth '10:20:4' gives non-integers"):
        parse_axis("depth", "10:20:4", int)
    with pytest.raises(ValueError, match="--sigma-w2 'a,b'"):
        parse_axis("sigma_w2", "a,b", float)


@pytest.mark.parametrize(("changes", "message"), [
    ({"depth": ()}, "depth axis is empty"),
    ({"depth": (5, 5)}, "repeats a value"),
    ({"optimizer": ("rmsprop",)}, "optimizer must be one of"),
    ({"sigma_w2": (-1.0,)}, "sigma_w2 must be finite and >= 0"),
    ({"activation": ("tanhh",)}, "tanh"),
    ({"seeds": 0}, "seeds must be an int >= 1"),
    ({"trainable_at": 1.0}, "trainable_at must be in"),
])
def test_grid_refuses_bad_axes(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_tasks_group_cells_by_shape():
    grid = tiny(sigma_w2=(1.0, 2.0, 3.0), seeds=3, depth=(2, 4))
    tasks = grid.tasks()
    assert grid.cells == 6 and len(tasks) == 2
    assert [t.where["depth"] for t in tasks] == [4, 2]  # the long one first
    assert len(tasks[0].replicas()) == 9  # 3 sigma_w2 x 1 sigma_b2 x 3 seeds
    assert tasks[0].key == "tanh-d4-w8-digits-sgd-s20"
    assert Grid.from_dict(json.loads(json.dumps(grid.as_dict()))) == grid


def test_replica_streams_depend_on_the_cell_and_seed_only():
    coords = {"activation": "tanh", "depth": 3, "width": 8, "data": "digits",
              "optimizer": "sgd", "steps": 20, "sigma_w2": 1.0, "sigma_b2": 0.05, "seed": 0}
    state = replica_stream(0, coords).generate_state(4)
    assert np.array_equal(state, replica_stream(0, dict(coords)).generate_state(4))
    for change in ({"seed": 1}, {"sigma_w2": 1.0000001}, {"depth": 4}):
        assert not np.array_equal(state, replica_stream(0, {**coords, **change})
                                  .generate_state(4))
    assert not np.array_equal(state, replica_stream(1, coords).generate_state(4))


def test_a_cell_trains_the_same_in_any_task():
    """A row does not depend on the other replicas of its task: sigma_w^2 = 2.5 alone gives
    the numbers it gives beside sigma_w^2 = 1."""
    both = run_task(tiny(depth=(3,)).tasks()[0])["rows"]
    alone = run_task(tiny(depth=(3,), sigma_w2=(2.5,)).tasks()[0])["rows"]
    assert [r for r in both if r["sigma_w2"] == 2.5] == alone


def test_task_rows_measure_the_signal_beside_the_theory():
    rows = run_task(tiny(sigma_w2=(0.5, 4.0), depth=(12,), width=(64,), steps=(1,),
                         probe=64).tasks()[0])["rows"]
    ordered = [r for r in rows if r["sigma_w2"] == 0.5]
    chaotic = [r for r in rows if r["sigma_w2"] == 4.0]
    for r in rows:
        assert set(runner.COLUMNS) <= set(r)
        assert r["q"] == pytest.approx(r["q_star"], rel=0.35)  # 12 layers: q is at q*
    # ordered: inputs collapse to one direction (c* = 1); chaotic: they decorrelate
    assert all(r["c_star"] == 1.0 and r["chi1"] < 1 and r["c"] > 0.9 for r in ordered)
    assert all(r["c_star"] < 0.3 and r["chi1"] > 1 and r["c"] < 0.45 for r in chaotic)
    for r in rows:
        assert r["c"] == pytest.approx(r["c_theory"], abs=0.15)


def test_expected_c_is_the_correlation_map_iterated_per_pair():
    """The theory beside a row: the probe's pairs walked through the maps one layer at a time
    (scalar maps here), the mean over pairs; depths asked in any order share one walk."""
    from initlab import theory
    from initlab.sweeps import task as t

    sw2, sb2, probe = 1.0, 0.05, 16
    X = t.load("digits", 0).X_train[:probe]
    walks = []
    for xa, xb in zip(X[0::2], X[1::2], strict=True):
        qa, qb = sw2 * np.mean(xa**2) + sb2, sw2 * np.mean(xb**2) + sb2
        c, q, path = (sw2 * np.mean(xa * xb) + sb2) / math.sqrt(qa * qb), (qa + qb) / 2, []
        for _ in range(9):
            path.append(c)
            c, q = (theory.correlation_map("tanh", c, q, math.sqrt(sw2), math.sqrt(sb2)),
                    theory.variance_map("tanh", q, math.sqrt(sw2), math.sqrt(sb2)))
        walks.append(path)
    reference = np.mean(walks, axis=0)
    t._walk.cache_clear()
    for depth in (6, 2, 9, 1, 4):
        got = t.expected_c("tanh", sw2, sb2, depth, "digits", 0, probe)
        assert got == pytest.approx(reference[depth - 1], rel=1e-12)
    assert abs(reference[8] - reference[0]) > 0.05  # the walk went somewhere
    assert math.isnan(t.expected_c("tanh", 0.0, sb2, 4, "digits", 0, probe))


# --- the runner: shards, resume, retries, processes -----------------------------------------

def test_sweep_writes_shards_then_the_table(tmp_path):
    seen = []
    out = runner.run(tiny(), tmp_path / "s", progress=lambda n, total, shard: seen.append(
        (n, total, shard["key"])))
    assert [s[:2] for s in seen] == [(1, 2), (2, 2)]
    assert sorted(p.stem for p in (out / "shards").glob("*.json")) == sorted(s[2] for s in seen)
    rows = runner.read_csv(out / "results.csv")
    assert len(rows) == tiny().cells * tiny().seeds == 8
    assert [(r["depth"], r["sigma_w2"], r["seed"]) for r in rows] == [
        (d, w, s) for d in (2, 3) for w in (1.0, 2.5) for s in (0, 1)]
    assert {type(r["trainable"]) for r in rows} == {bool}
    theory = runner.read_csv(out / "theory.csv")
    assert len(theory) >= runner.THEORY_POINTS and {1.0, 2.5} <= {t["sigma_w2"] for t in theory}


def test_a_folder_is_never_swept_twice(tmp_path):
    out = runner.run(tiny(), tmp_path / "s")
    before = table(out)
    with pytest.raises(ValueError, match="holds a sweep already.*--resume"):
        runner.run(tiny(), out)
    with pytest.raises(ValueError, match=r"differs from the saved one \(depth"):
        runner.run(tiny(depth=(2, 5)), out, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        runner.run(tiny(), tmp_path / "other")
    assert table(out) == before


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    def stop_after_one(n, total, shard):
        raise KeyboardInterrupt

    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        runner.run(tiny(), out, progress=stop_after_one)
    assert len(list((out / "shards").glob("*.json"))) == 1 and not (out / "results.csv").exists()
    first = next((out / "shards").glob("*.json"))
    stamp = first.stat().st_mtime_ns
    ran = []
    runner.run(None, out, resume=True, progress=lambda n, total, shard: ran.append(shard["key"]))
    assert ran == [t.key for t in tiny().tasks() if t.key != first.stem]  # the rest only
    assert first.stat().st_mtime_ns == stamp  # the finished shard was not redone
    assert table(out) == table(runner.run(tiny(), tmp_path / "fresh"))


class Flaky(ThreadPoolExecutor):
    """Fails the first ``fails`` submissions of each task, as a killed worker would."""

    def __init__(self, fails: int):
        super().__init__(1)
        self.fails, self.count = fails, {}

    def submit(self, fn, task, *args, **kwargs):
        self.count[task.key] = self.count.get(task.key, 0) + 1
        if self.count[task.key] <= self.fails:
            future: Future = Future()
            future.set_exception(RuntimeError("worker died"))
            return future
        return super().submit(fn, task, *args, **kwargs)


def test_failed_tasks_are_retried_then_reported(tmp_path):
    with Flaky(fails=1) as pool:
        out = runner.run(tiny(), tmp_path / "s", executor=pool, retries=2)
    shards = [json.loads(p.read_text()) for p in (out / "shards").glob("*.json")]
    assert sorted(s["attempts"] for s in shards) == [2, 2]
    assert table(out) == table(runner.run(tiny(), tmp_path / "plain"))
    with Flaky(fails=5) as pool, pytest.raises(runner.SweepFailed, match="2 of 2 tasks failed"):
        runner.run(tiny(), tmp_path / "lost", executor=pool, retries=2)
    assert (tmp_path / "lost" / "sweep.json").is_file()  # resumable


def test_local_processes_give_the_same_table(tmp_path):
    one = runner.run(tiny(), tmp_path / "one", jobs=1)
    two = runner.run(tiny(), tmp_path / "two", jobs=2)
    assert table(one) == table(two)
    hosts = {json.loads(p.read_text())["pid"] for p in (two / "shards").glob("*.json")}
    import os

    assert os.getpid() not in hosts  # the tasks ran in worker processes


# --- the command line and the report ---------------------------------------------------------

def test_cli_sweep_report_and_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["sweep", "--sigma-w2", "1,2.5", "--depth", "2,3", "--width", "8", "--steps",
            "20", "--seeds", "2", "--batch-size", "64", "--jobs", "1", "--out", str(out)]
    assert main(args) == 0
    text = said(capsys)
    assert "4 cells x 2 seeds = 8 trainings in 2 tasks" in text and "trainable" in text
    assert main(args) == 2
    assert "holds a sweep already" in said(capsys)
    assert main(["sweep", "--resume", str(out), "--depth", "9"]) == 2
    assert "differs from the saved one" in said(capsys)
    assert main(["sweep", "--resume", str(out)]) == 0  # nothing left: merges again
    assert main(["report", str(out)]) == 0
    assert (out / "phase-0.png").stat().st_size > 5000
    assert (out / "correlation-0.png").is_file()
    html = (out / "index.html").read_text()
    assert html.count("<img") == 2 and "trainable" in html


def test_a_task_of_one_replica_gives_its_row():
    """One cell and one seed: a lone replica, whose evaluate gives floats, not arrays."""
    grid = Grid(sigma_w2=(1.0,), depth=(2,), width=(8,), steps=(5,), seeds=1)
    (task,) = grid.tasks()
    (row,) = run_task(task)["rows"]
    assert row["sigma_w2"] == 1.0 and math.isfinite(row["loss"])
    assert 0.0 <= row["train_accuracy"] <= 1.0 and row["trainable"] in (True, False)


def test_cli_sweep_compiles_the_kernels_as_a_step_before_any_task(tmp_path, capsys,
                                                                  monkeypatch):
    from initlab.nn import kernels

    seen = []
    monkeypatch.setattr(kernels, "warm_up", lambda progress=None, **kw: seen.append(("compile", kw))
                        or (progress and progress(1, 1)))
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **kw: seen.append("tasks") or real(*a, **kw))
    assert main(["sweep", "--sigma-w2", "1", "--depth", "2", "--width", "8", "--steps", "5",
                 "--seeds", "1", "--jobs", "1", "--out", str(tmp_path / "s")]) == 0
    assert seen == [("compile", {"normalization": False}), "tasks"]  # Dense stacks only
    assert "compile kernels" in said(capsys)


def test_cli_sweep_help_explains_every_axis(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = said(capsys)
    for option in ("--activation", "--sigma-w2", "--sigma-b2", "--depth", "--width", "--data",
                   "--optimizer", "--steps", "--seeds", "--scheduler", "--resume", "--grid"):
        assert option in text
    assert "start:stop:count" in text and "N(0, sigma_w^2 / fan_in)" in text


def test_cli_sweep_grid_file(tmp_path, capsys):
    (tmp_path / "grid.toml").write_text(
        'sigma_w2 = [1.0, 2.5]\ndepth = [2]\nwidth = [8]\nsteps = [10]\nseeds = 1\n')
    assert main(["sweep", "--grid", str(tmp_path / "grid.toml"), "--out",
                 str(tmp_path / "g")]) == 0
    saved = json.loads((tmp_path / "g" / "sweep.json").read_text())["grid"]
    assert saved["sigma_w2"] == [1.0, 2.5] and saved["seeds"] == 1
    (tmp_path / "bad.toml").write_text("depthh = [2]\n")
    assert main(["sweep", "--grid", str(tmp_path / "bad.toml"), "--out",
                 str(tmp_path / "b")]) == 2
    assert "unknown grid key(s) depthh" in said(capsys)


# --- data and theory for sweeps --------------------------------------------------------------

def test_teacher_student_is_balanced_and_a_function_of_its_input():
    split = teacher_student(400, 200, features=16, classes=4, rng=3)
    assert np.bincount(split.y_train).tolist() == [100] * 4
    assert np.bincount(split.y_test).tolist() == [50] * 4
    assert split.X_train.shape == (400, 16)
    # the same seed gives the same set; another seed, another teacher
    again = teacher_student(400, 200, features=16, classes=4, rng=3)
    assert np.array_equal(again.X_train, split.X_train)
    assert not np.array_equal(teacher_student(400, 200, features=16, classes=4,
                                              rng=4).y_train, split.y_train)
    # a nearest-neighbour classifier beats chance: the labels follow the inputs
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(5).fit(split.X_train, split.y_train)
    assert knn.score(split.X_test, split.y_test) > 0.5
    with pytest.raises(ValueError, match="multiples of classes=3"):
        teacher_student(100, 50, classes=3)


def test_theory_phase_cli(tmp_path, capsys):
    assert main(["theory", "--phase", "--out", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "critical sigma_w^2" in said and (tmp_path / "phase-tanh.png").is_file()
    row = next(line for line in said.splitlines() if line.strip().startswith("│      0.05"))
    assert float(row.split("│")[2]) == pytest.approx(1.76, abs=0.01)  # Schoenholz et al.


def test_sweep_grid_replicas_layout_is_the_tasks():
    task = Task(tiny(), {"activation": "tanh", "depth": 2, "width": 8, "data": "digits",
                         "optimizer": "sgd", "steps": 20})
    assert [(r["sigma_w2"], r["seed"]) for r in task.replicas()] == [
        (1.0, 0), (1.0, 1), (2.5, 0), (2.5, 1)]
    assert math.isclose(task.cost, 2 * 64 * 20 * 4)
