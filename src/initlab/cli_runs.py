"""The run-folder commands of ``initlab``: reproduce, run, report, runs and compare. They parse
nothing (``initlab.cli`` does) and print; the work lives in ``initlab.experiments`` and
``initlab.report``."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _run_cards(cards: list, args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from initlab.experiments.runner import run_cards
    from initlab.report.render import render

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got --seeds {args.seeds}")
    if args.depth is not None:
        if args.depth < 1:
            raise ValueError(f"--depth must be >= 1 (residual blocks); got --depth {args.depth}")
        if not any(hasattr(card.sizes["default"], "depth") for card in cards):
            raise ValueError(f"--depth applies to the fixup card only; got --depth "
                             f"{args.depth} with {', '.join(card.name for card in cards)}")
    import time

    from initlab.experiments.runner import check_out

    check_out(args.out)  # refuse a bad --out before compiling anything
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1; got --jobs {args.jobs}")
    jobs = _jobs(args)
    start = time.perf_counter()
    current: list[str] = []  # the card running now
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            compile_kernels(progress)
        except KeyboardInterrupt:
            console.print(f"[yellow]Interrupted after {time.perf_counter() - start:.0f} s, "
                          f"while compiling the kernels: no card ran, nothing was written.[/]")
            return 130
        tasks = {card.name: progress.add_task(card.title[:28], total=1.0) for card in cards}
        previous: list = []

        def on_card(card):
            for task in previous:  # the card before this one has finished
                progress.update(task, completed=1.0)
            previous[:] = [tasks[card.name]]
            current[:] = [card.name]
            return lambda fraction: progress.update(tasks[card.name], completed=fraction)

        try:
            options = {"depth": args.depth} if args.depth is not None else {}
            folder, results = run_cards(cards, seeds=args.seeds, out=args.out,
                                        size=args.size, data=args.data, on_card=on_card,
                                        options=options, jobs=jobs)
        finally:
            for task in previous:
                progress.update(task, completed=1.0)
    _, index = render(folder)
    from initlab.report.render import VERDICTS, seeds_text

    table = Table(title="claims of the sources, failing first (the evidence: in the report)")
    table.add_column("verdict")
    table.add_column("claim", max_width=44, no_wrap=True, overflow="ellipsis")
    table.add_column("headline", overflow="fold")
    table.add_column("seeds", max_width=12, overflow="fold")
    colors = {"holds": "green", "fails": "red", "not run": "dim"}
    claims = sorted((c for r in results for c in r.claims),
                    key=lambda c: VERDICTS.index(c.verdict))
    for claim in claims:
        table.add_row(f"[{colors[claim.verdict]}]{claim.verdict}[/]", escape(claim.claim),
                      escape(claim.headline or claim.measured),
                      seeds_text({"seeds": claim.seeds, "replicas": claim.replicas}))
    console.print(table)
    wall = time.perf_counter() - start
    finished = sum(1 for r in results if any(c.verdict != "not run" for c in r.claims))
    payload = json.loads((folder / "results.json").read_text())
    images = payload.get("data", {}).get("images")
    if images:
        console.print(f"Image data: {escape(images)}")
    if payload.get("interrupted"):
        where = f" during card {current[0]}" if current else ""
        console.print(f"[yellow]Interrupted after {wall:.0f} s{where}: {finished} of "
                      f"{len(results)} cards finished; the rest are marked 'not run'.[/] "
                      f"Report: {index}")
        return 130
    console.print(f"{len(results)} cards in {wall:.0f} s. Report: {index}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return int(args.jobs or min(cores, 4))


def _start_worker_server() -> None:
    """Start the process that starts the card workers (the runner's forkserver) now, with the
    cards' modules and scikit-learn's datasets imported in it: it imports them while this
    process compiles the kernels, and the workers it forks start with them (each imported
    them itself, ~1.2 s and 0.7 s, before)."""
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["__main__", "initlab.experiments", "initlab.nn.kernels", "sklearn.datasets"])
    forkserver.ensure_running()


def compile_kernels(progress, normalization: bool = True) -> None:
    """Compile the training kernels as a step of its own (from numba's cache after the first
    run), so that a first run shows the compile instead of pausing in the first card (or the
    first task of a sweep); ``normalization``: also the specialization for LayerNorm,
    BatchNorm and residual blocks (the normalization and fixup cards train them)."""
    try:
        from initlab.nn import kernels
    except ImportError:  # numba unavailable: the cards train on the NumPy engine
        return
    task = progress.add_task("compile kernels (1st run)", total=1.0)
    kernels.warm_up(progress=lambda done, total: progress.update(task, completed=done / total),
                    normalization=normalization)
    progress.update(task, completed=1.0)


def _reproduce(args: argparse.Namespace, console: Console) -> int:
    if _jobs(args) > 1:  # before this process imports the cards, which the server imports too
        _start_worker_server()
    from initlab import experiments

    return _run_cards(experiments.all_cards(), args, console)


def _run(args: argparse.Namespace, console: Console) -> int:
    from initlab import experiments

    return _run_cards([experiments.get(args.card)], args, console)


def _report(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from initlab.report.render import render
    from initlab.sweeps.runner import MANIFEST

    if (Path(args.run_dir) / MANIFEST).is_file():
        from initlab.report.sweep import render as render_sweep

        md, index = render_sweep(args.run_dir)
    else:
        md, index = render(args.run_dir)
    console.print(f"wrote {md}\nwrote {index}")
    return 0


def _runs(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from initlab.report import runs

    folders = runs.find(args.dir)
    table = Table(title=f"runs under {args.dir}")
    for column in ("run", "started", "cards", "verdicts", "size", "seeds", "time"):
        table.add_column(column, no_wrap=column in ("run", "started"))
    for folder in folders:
        row = runs.summary(folder)
        cards = row["cards"]
        verdicts = ", ".join(f"{n} {v}" for v, n in row["counts"].items() if n)
        table.add_row(escape(str(folder.relative_to(Path(args.dir)))), row["started"],
                      escape(", ".join(cards) if len(cards) < 4 else f"{len(cards)} cards"),
                      verdicts, row["size"], str(row["seeds"]),
                      f"{row['seconds']:.0f} s" + (" (interrupted)" if row["interrupted"]
                                                   else ""))
    console.print(table)
    console.print(f"{len(folders)} run(s)")
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    from initlab.report import runs

    rows = runs.compare(args.run_a, args.run_b)
    table = Table(title=f"claims that differ: A = {args.run_a}, B = {args.run_b}")
    for column in ("claim", "A", "B"):
        table.add_column(column, overflow="fold")
    colors = {"holds": "green", "fails": "red", "not run": "dim"}

    def side(entry) -> str:
        if entry is None:
            return "[dim](not in this run)[/]"
        return f"[{colors.get(entry['verdict'], 'dim')}]{entry['verdict']}[/]: " \
               f"{escape(entry['headline'])}"
    for row in rows:
        table.add_row(f"{escape(row['id'])}\n{escape(row['claim'])}", side(row["a"]),
                      side(row["b"]))
    console.print(table)
    console.print(f"{len(rows)} claim(s) differ in verdict or headline")
    return 0
