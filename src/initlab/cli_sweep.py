"""``initlab sweep``: the parser of its axes and the command, which runs
:func:`initlab.sweeps.runner.run` with a progress bar over tasks."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.markup import escape

from initlab.sweeps.grid import OPTIMIZERS, Grid, parse_axis

# (option, Grid field, type, help); axes take 'a,b,c' or, for numbers, 'start:stop:count'
AXES = (
    ("--activation", "activation", str, "hidden activations, e.g. tanh,relu (default tanh)"),
    ("--sigma-w2", "sigma_w2", float,
     "weight variances sigma_w^2: weights N(0, sigma_w^2 / fan_in) in every layer, e.g. "
     "1:4:13 (13 values from 1 to 4) or 1,1.76,4 (default 1,1.76,4)"),
    ("--sigma-b2", "sigma_b2", float, "bias variances sigma_b^2: biases N(0, sigma_b^2) "
                                      "(default 0.05)"),
    ("--depth", "depth", int, "hidden layers, e.g. 5,10,20,40,80 (default 5,10,20)"),
    ("--width", "width", int, "units per hidden layer (default 32)"),
    ("--data", "data", str, "digits (sklearn's, no download), fashion-mnist, teacher (inputs "
                            "N(0, I_32), labels of a random tanh teacher, 4 balanced classes) "
                            "or a folder of IDX files (default digits)"),
    ("--optimizer", "optimizer", str, f"{', '.join(OPTIMIZERS)}; momentum is SGD with 0.9 "
                                      f"(default sgd)"),
    ("--steps", "steps", int, "training budget in optimizer steps (default 200)"),
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep", help="train a grid of networks: initialization x depth x width x seeds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every cell of a grid for --seeds seeds (each axis a list 'a,b,c' "
                    "or, for numbers,\n'start:stop:count') and write one row per cell and "
                    "seed: the final loss and accuracies,\na trainable flag, divergence, and "
                    "the signal at init (q and the correlation c of two\ninputs at the last "
                    "hidden layer) beside the mean-field theory's q*, c*, chi_1 and xi_c.\n"
                    "Cells of one activation, depth, width, data, optimizer and budget train "
                    "together as\nthe replicas of one model (a task). Shards are written as "
                    "tasks finish; an interrupted\nsweep continues with --resume.",
        epilog="example (the trainability phase diagram of Schoenholz et al. 2017):\n"
               "  initlab sweep --activation tanh --sigma-w2 1:4:13 --sigma-b2 0.05 \\\n"
               "      --depth 5,10,20,40,80 --width 32 --seeds 2 --steps 200 --data digits \\\n"
               "      --out sweeps/phase\n"
               "  initlab report sweeps/phase        # the heatmaps\n"
               "on a Dask cluster: dask scheduler; dask worker ADDRESS --nworkers 1 "
               "--nthreads 1 (per machine);\n"
               "  initlab sweep ... --scheduler tcp://HOST:8786")
    for option, name, _, text in AXES:
        sweep.add_argument(option, dest=name, default=None, help=text)
    sweep.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 2)")
    sweep.add_argument("--learning-rate", type=float, default=None,
                       help="learning rate (default 0.01)")
    sweep.add_argument("--batch-size", type=int, default=None,
                       help="minibatch size (default 128; at least the data: full batch)")
    sweep.add_argument("--trainable-at", type=float, default=None,
                       help="the trainable rule: training accuracy >= chance + T x (1 - "
                            "chance) and no divergence (default T = 0.5)")
    sweep.add_argument("--seed", type=int, default=None,
                       help="the sweep's seed; every replica's stream comes from it and its "
                            "cell (default 0)")
    sweep.add_argument("--grid", metavar="FILE", default=None,
                       help="a TOML file of the same settings (keys: activation, sigma_w2, "
                            "..., seeds, learning_rate); options given override it")
    sweep.add_argument("--out", default=None,
                       help="the sweep's folder (default sweeps/sweep-<time>); never one "
                            "that holds another sweep")
    sweep.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the sweep in DIR: its saved grid, skipping finished "
                            "tasks")
    sweep.add_argument("--jobs", type=int, default=None,
                       help="local worker processes (default: one per 2 cores, at least 1)")
    sweep.add_argument("--threads", type=int, default=None,
                       help="threads per task (default: cores / jobs; on Dask, all the "
                            "worker machine's cores)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on a Dask distributed cluster (pip install 'initlab[dask]')")
    sweep.set_defaults(run=_sweep)


def grid_from(args: argparse.Namespace) -> Grid | None:
    """The grid the options give (over --grid FILE's, over the defaults); None if no option
    was given (with --resume: the saved grid)."""
    values = Grid.from_file(args.grid).as_dict() if args.grid else {}
    given = False
    for _, name, kind, _ in AXES:
        text = getattr(args, name)
        if text is not None:
            values[name] = parse_axis(name, text, kind)
            given = True
    for name in ("seeds", "learning_rate", "batch_size", "trainable_at", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
            given = True
    if not given and not args.grid:
        return None
    return Grid.from_dict(values)


def _sweep(args: argparse.Namespace, console: Console) -> int:
    import contextlib
    import os

    from rich import progress as bars

    from initlab.sweeps import runner

    for name in ("jobs", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; got --{name} {getattr(args, name)}")
    if args.resume and args.out:
        raise ValueError("give the folder once: --resume DIR continues the sweep in DIR")
    grid = grid_from(args)
    if grid is None and not args.resume:
        grid = Grid()
    out = args.resume or args.out or f"sweeps/sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    out, grid = runner.prepare(out, grid, resume=bool(args.resume))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    jobs = args.jobs or max(1, cores // 2)
    executor = None
    stack = contextlib.ExitStack()
    if args.scheduler:
        executor = stack.enter_context(runner.dask_executor(args.scheduler))
    where = f"Dask at {args.scheduler}" if args.scheduler else \
        f"{jobs} local process{'es' if jobs > 1 else ''}"
    tasks = grid.tasks()
    console.print(f"sweep: {grid.cells} cells x {grid.seeds} seeds = "
                  f"{grid.cells * grid.seeds} trainings in {len(tasks)} tasks, on {where}; "
                  f"folder {escape(str(out))}")
    start = time.perf_counter()
    columns = (bars.TextColumn("{task.description}"), bars.BarColumn(),
               bars.MofNCompleteColumn(), bars.TimeElapsedColumn(), bars.TextColumn("eta"),
               bars.TimeRemainingColumn())
    try:
        with bars.Progress(*columns, console=console) as progress:
            if not args.scheduler:  # local workers load what this process compiles and caches
                from initlab.cli_runs import compile_kernels

                compile_kernels(progress, normalization=False)  # a sweep trains Dense stacks
            done = len(list((out / "shards").glob("*.json")))
            bar = progress.add_task("tasks", total=len(tasks), completed=done)
            runner.run(None, out, resume=True, executor=executor, jobs=jobs,
                       threads=args.threads,
                       progress=lambda n, total, shard: progress.update(
                           bar, completed=n, description=f"tasks (last: {shard['key']})"))
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted: the finished tasks are in {escape(str(out))}/"
                      f"shards; continue with `initlab sweep --resume {escape(str(out))}`[/]")
        return 130
    except runner.SweepFailed as err:
        console.print(f"[red]initlab sweep: {escape(str(err))}[/]")
        return 1
    finally:
        stack.close()
    rows = runner.rows(out)
    trained = sum(r["trainable"] for r in rows)
    console.print(f"{len(rows)} trainings, {trained} trainable, in "
                  f"{time.perf_counter() - start:.0f} s: {escape(str(out))}/results.csv "
                  f"(`initlab report {escape(str(out))}` draws the heatmaps)")
    return 0
