"""initlab sweep on a real Dask distributed cluster: a scheduler and two worker processes
started by the test (``dask scheduler`` / ``dask worker``, as the README's recipe). The same
grid gives the same table as local processes; a worker killed in the middle of a task loses
nothing; an interrupted sweep resumes on the cluster."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from initlab.sweeps import runner  # noqa: E402
from initlab.sweeps.grid import Grid  # noqa: E402

# four tasks (one per depth), each about a second: long enough to kill a worker inside one
GRID = Grid(sigma_w2=(1.0, 1.76, 3.0), sigma_b2=(0.05,), depth=(4, 6, 8, 10), width=(32,),
            steps=(100,), seeds=2, batch_size=128, probe=16)


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes (no nanny: a killed worker stays dead,
    so the scheduler must move its task to the other one)."""

    def __init__(self, folder: Path, workers: int = 2):
        dask = shutil.which("dask") or pytest.skip("the dask command is not installed")
        self.file = folder / "scheduler.json"
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        common = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--port", "0", "--no-dashboard", "--scheduler-file",
             str(self.file)], **common)
        self.workers = [subprocess.Popen(
            [dask, "worker", "--scheduler-file", str(self.file), "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--name", f"w{i}"], **common)
            for i in range(workers)]
        self.client = distributed.Client(scheduler_file=str(self._wait_for_file()), timeout=60)
        self.client.wait_for_workers(workers, timeout=60)
        self.address = self.client.scheduler.address

    def _wait_for_file(self) -> Path:
        deadline = time.monotonic() + 60
        while not self.file.is_file():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.1)
        return self.file

    def pid_running_a_task(self, timeout: float = 30) -> int:
        """The pid of a worker that is processing a task now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.client.scheduler_info()["workers"]
            busy = [a for a, tasks in self.client.processing().items() if tasks]
            if busy:  # workers are named w0, w1... after their index in self.workers
                return self.workers[int(info[busy[0]]["name"][1:])].pid
            time.sleep(0.05)
        raise RuntimeError("no worker was processing a task")

    def close(self) -> None:
        self.client.close()
        for group in (self.workers, [self.scheduler]):  # workers first: they say goodbye
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of its own, for a test that kills one of its workers."""
    c = Cluster(tmp_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    out = runner.run(GRID, tmp_path_factory.mktemp("local") / "s", jobs=1)
    return (out / "results.csv").read_text()


def test_dask_gives_the_local_table_and_resumes(cluster, tmp_path, local_table):
    out = tmp_path / "dask"

    def stop_after_one(n, total, shard):
        raise KeyboardInterrupt

    with runner.dask_executor(cluster.address) as executor, pytest.raises(KeyboardInterrupt):
        runner.run(GRID, out, executor=executor, threads=1, progress=stop_after_one)
    assert len(list((out / "shards").glob("*.json"))) == 1
    with runner.dask_executor(cluster.address) as executor:
        runner.run(None, out, executor=executor, threads=1, resume=True)
    assert (out / "results.csv").read_text() == local_table
    # the tasks ran in the workers, not in this process
    import json

    pids = {json.loads(p.read_text())["pid"] for p in (out / "shards").glob("*.json")}
    assert os.getpid() not in pids and pids <= {w.pid for w in cluster.workers}


def test_a_worker_killed_mid_task_loses_nothing(own_cluster, tmp_path, local_table):
    cluster = own_cluster
    out = tmp_path / "killed"
    killed: list[int] = []

    def kill_once(n, total, shard):
        if not killed:  # a task has finished: kill a worker inside its next one
            pid = cluster.pid_running_a_task()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with runner.dask_executor(cluster.address) as executor:
        runner.run(GRID, out, executor=executor, threads=1, progress=kill_once)
    assert killed and any(w.pid == killed[0] and w.wait(10) == -signal.SIGKILL
                          for w in cluster.workers)
    assert len(list((out / "shards").glob("*.json"))) == len(GRID.tasks())
    assert (out / "results.csv").read_text() == local_table


def test_cli_scheduler_option(cluster, tmp_path, capsys):
    from initlab.cli import main

    out = tmp_path / "cli"
    assert main(["sweep", "--sigma-w2", "1,3", "--depth", "2", "--width", "8", "--steps", "10",
                 "--seeds", "1", "--threads", "1", "--scheduler", cluster.address, "--out",
                 str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"on Dask at {cluster.address}" in text and "2 trainings" in text
    assert (out / "results.csv").is_file()

