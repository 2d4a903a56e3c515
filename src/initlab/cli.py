"""The ``initlab`` command. It parses arguments and prints; the work lives in library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import initlab
from initlab import initializers


def _list(args: argparse.Namespace, console: Console) -> int:
    if args.cards:
        from initlab.experiments import catalog

        if args.markdown:
            sys.stdout.write(catalog.markdown())  # as docs/cards.md holds it
            return 0
        from rich.markdown import Markdown

        console.print(Markdown(catalog.markdown()))
        return 0
    table = Table(title="initializers (initlab.initializers.get(name))")
    table.add_column("name", style="bold")
    table.add_column("aliases")
    table.add_column("what it draws")
    for name in initializers.available(args.pattern):
        table.add_row(name, escape(", ".join(initializers.aliases_of(name))),
                      escape(initializers.describe(name)))  # "[a, b]" is text, not markup
    console.print(table)
    if args.pattern == "*":
        console.print(_cards_table())
    return 0


def _cards_table() -> Table:
    from initlab import experiments

    table = Table(title="experiment cards (initlab run CARD)")
    table.add_column("card", style="bold")
    table.add_column("claim of the sources")
    for name in experiments.names():
        try:
            table.add_row(name, escape(experiments.get(name).summary))
        except ImportError:
            table.add_row(name, "[red](not available)[/]")
    return table


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
    start = time.perf_counter()
    current: list[str] = []  # the card running now
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            _compile_kernels(progress)
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
                                        options=options)
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


def _compile_kernels(progress) -> None:
    """Compile the training kernels as a step of its own (from numba's cache after the first
    run), so that a first run shows the compile instead of pausing in the first card."""
    try:
        from initlab.nn import kernels
    except ImportError:  # numba unavailable: the cards train on the NumPy engine
        return
    task = progress.add_task("compile kernels (1st run)", total=1.0)
    kernels.warm_up(progress=lambda done, total: progress.update(task, completed=done / total))
    progress.update(task, completed=1.0)


def _reproduce(args: argparse.Namespace, console: Console) -> int:
    from initlab import experiments

    return _run_cards(experiments.all_cards(), args, console)


def _run(args: argparse.Namespace, console: Console) -> int:
    from initlab import experiments

    return _run_cards([experiments.get(args.card)], args, console)


def _report(args: argparse.Namespace, console: Console) -> int:
    from initlab.report.render import render

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


def _gradcheck(args: argparse.Namespace, console: Console) -> int:
    from initlab.experiments.gradcheck import check_all

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1; got --samples {args.samples}")
    if not args.tol > 0:
        raise ValueError(f"--tol must be > 0; got --tol {args.tol}")

    table = Table(title=f"gradient check: {args.layers} network, {args.samples} samples, "
                        f"central differences, float64 (tolerance {args.tol:g})")
    for column in ("hidden activation", "loss", "output", "max relative error", "verdict"):
        table.add_column(column)
    failures = 0
    for row in check_all(args.activation, args.loss, layers=args.layers, samples=args.samples,
                         tol=args.tol, seed=args.seed):
        failures += not row["ok"]
        table.add_row(row["activation"], row["loss"], row["output"], f"{row['error']:.1e}",
                      "[green]ok[/]" if row["ok"] else "[red]FAILED[/]")
    console.print(table)
    console.print(f"{table.row_count - failures} of {table.row_count} combinations pass")
    return 1 if failures else 0


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3g}"  # NaN prints as '-'


def _percent(fraction: float) -> str:
    """A fraction as a percentage, '-' for NaN (no such quantity for this layer)."""
    return "-" if fraction != fraction else f"{fraction:.0%}"


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from initlab.inspect import THRESHOLDS, inspect_network

    if args.torch:
        return _inspect_torch(args, console)
    result = inspect_network(args.layers, activation=args.activation,
                             init=args.init or "he_normal",
                             data=args.data, replicas=args.replicas, batch=args.batch,
                             seed=args.seed)
    table = Table(title=f"{args.layers} {args.activation}, init {args.init or 'he_normal'}, "
                        f"{args.replicas} replicas, probe batch of {args.batch} from "
                        f"{result.data}")
    for column in ("layer", "units", "output std (mean ± sd)", "theory", "dead", "saturated",
                   "grad std", "verdict"):
        table.add_column(column, justify="right" if column not in ("verdict",) else "left")
    colors = {"healthy": "green", "vanishing": "yellow", "exploding": "red", "overflow": "red",
              "dead": "magenta", "saturated": "magenta"}
    for row in result.summary:
        table.add_row(str(row["layer"]), str(row["units"]),
                      f"{_fmt(row['act_std'])} ± {_fmt(row['act_std_sd'])}",
                      _fmt(row["theory_std"]), f"{row['dead_fraction']:.0%}",
                      _percent(row["saturated_fraction"]), _fmt(row["grad_std"]),
                      f"[{colors[row['verdict']]}]{row['verdict']}[/]")
    console.print(table)
    console.print(f"theory: mean-field prediction of the output std (sigma_w from the drawn "
                  f"weights); the output layer has none. Thresholds: {THRESHOLDS}.")
    if args.out:
        for path in write_inspection_figures(result, args.out):
            console.print(f"wrote {path}")
    return 0


def _inspect_torch(args: argparse.Namespace, console: Console) -> int:
    try:
        from initlab import torch as itorch
    except ImportError:
        raise ValueError("--torch needs PyTorch: pip install torch==2.13.0") from None
    from initlab.inspect import THRESHOLDS

    module = itorch.load_factory(args.torch)
    if args.init:
        itorch.initialize(module, args.init, rng=args.seed)
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    probe = itorch.probe_batch(module, shape, batch=args.batch, seed=args.seed)
    rows = itorch.verdict_rows(probe.table)
    table = Table(title=f"{args.torch} ({'init ' + args.init if args.init else 'its own init'}"
                        f"), Gaussian probe batch of {args.batch}")
    for column in ("layer", "name", "units", "output std", "dead", "saturated", "grad std",
                   "verdict"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["layer"]), row["name"], str(row["units"]), _fmt(row["act_std"]),
                      f"{row['dead_fraction']:.0%}", _percent(row["saturated_fraction"]),
                      _fmt(row["grad_std"]), row["verdict"])
    console.print(table)
    console.print(f"Outputs of each Linear / convolution layer (before its activation; "
                  f"'saturated' reads a Tanh or Sigmoid module that follows the layer in an "
                  f"nn.Sequential, '-' where there is none). Thresholds: {THRESHOLDS}.")
    if args.out:
        import numpy as np

        from initlab.probes import Table as Rows
        from initlab.report import figures

        stds = [row["act_std"] for row in rows]
        counts = np.stack([probe.histogram(i)[0] for i in range(len(rows))])
        paths = [Rows(rows).to_csv(_fresh(args.out, "layers.csv")),
                 figures.std_vs_depth({args.torch: {"mean": stds}},
                                      _fresh(args.out, "std_vs_depth.png"),
                                      title="output std of each Linear / convolution layer"),
                 figures.histogram_image(counts, _fresh(args.out, "histograms.png"),
                                         title="outputs of each Linear / convolution layer")]
        for path in paths:
            console.print(f"wrote {path}")
    return 0


def _doctor(args: argparse.Namespace, console: Console) -> int:
    from initlab._validate import suggest

    fail_on = [v.strip() for v in (args.fail_on or "").split(",") if v.strip()]
    problems = ("overflow", "exploding", "vanishing", "dead", "saturated")
    for value in fail_on:  # checked before the model is built
        if value not in problems:
            raise ValueError(f"--fail-on takes a comma-separated list of {', '.join(problems)}; "
                             f"got --fail-on {args.fail_on!r}: {value!r} is not one"
                             f"{suggest(value, problems)}")
    if args.batch < 2:
        raise ValueError(f"--batch must be >= 2; got --batch {args.batch}")
    try:
        import torch

        from initlab import torch as itorch
        from initlab.torch.doctor import doctor
    except ImportError:
        raise ValueError("doctor needs PyTorch: pip install torch==2.13.0") from None
    module = itorch.load_factory(args.factory)
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            raise ValueError(f"--input-shape must be comma-separated ints, e.g. 3,32,32; got "
                             f"--input-shape {args.input_shape!r}") from None
    else:
        first = next(itorch.layers(module), (None, None))[1]
        if not isinstance(first, torch.nn.Linear):
            raise ValueError("give --input-shape (one sample's shape, e.g. 3,32,32) for a model "
                             "that does not start with a Linear layer")
        shape = (first.in_features,)
    dtype = next(module.parameters()).dtype
    gen = torch.Generator().manual_seed(args.seed)
    X = torch.randn((args.batch, *shape), generator=gen, dtype=dtype)
    report = doctor(module, X)
    failing = sorted({row["verdict"] for row in report.layers} & set(fail_on))
    if args.json:
        sys.stdout.write(report.to_json(indent=1) + "\n")
        return 1 if failing else 0
    summary = report.summary
    counts = ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items() if n)
    worst = summary["worst"]
    console.print(f"[bold]initlab doctor {escape(args.factory)}[/]: {summary['layers']} "
                  f"Linear / convolution layers on a Gaussian batch of {args.batch}: {counts}.")
    if worst:
        console.print(f"Worst layer: {escape(worst['path'])} "
                      f"({worst['verdict']}, output std {_fmt(worst['act_std'])}).")
    if summary["not_reached"]:
        console.print(f"Not reached by the input: {escape(', '.join(summary['not_reached']))}")
    table = Table(title="per layer (gains: std out / std in; moment gain: mean-field, 1 keeps "
                        "the signal)")
    for column in ("layer", "module", "init (p)", "fwd gain", "bwd gain", "output std",
                   "theory std", "moment gain", "dead", "saturated", "verdict"):
        table.add_column(column, overflow="fold")
    colors = {"healthy": "green", "vanishing": "yellow", "exploding": "red", "overflow": "red",
              "dead": "magenta", "saturated": "magenta"}
    for row in report.layers:
        init = row["init"]
        p = "" if init["p_value"] is None else f" ({init['p_value']:.2g})"
        table.add_row(escape(row["path"]), row["module"], escape(init["code"] + p),
                      _fmt(row["forward_gain"]), _fmt(row["backward_gain"]),
                      _fmt(row["act_std"]), _fmt(row["expected_std"]),
                      _fmt(row["moment_gain"]), _percent(row["dead_fraction"]),
                      _percent(row["saturated_fraction"]),
                      f"[{colors[row['verdict']]}]{row['verdict']}[/]")
    console.print(table)
    if report.fix:
        fixed = [row for row in report.layers if row["fix"]]
        console.print(f"Fix ({len(fixed)} layer(s); paste with `model` your model and "
                      f"`from torch import nn`):")
        console.print(escape(report.fix), markup=False, highlight=False)
        console.print(f"Predicted, first of them: {escape(fixed[0]['fix']['effect'])}.")
        console.print(f"Or: {escape(summary['alternative'])}")
    if failing:
        console.print(f"[red]--fail-on: {len(failing)} verdict(s) found: "
                      f"{', '.join(failing)}[/]")
    return 1 if failing else 0


def write_inspection_figures(result, out: str) -> list:
    import numpy as np

    from initlab.report import figures

    hidden = [row for row in result.summary if row["layer"] < len(result.summary) - 1]
    curve = {"mean": [r["act_std"] for r in hidden], "min": [r["act_std_min"] for r in hidden],
             "max": [r["act_std_max"] for r in hidden], "theory": [r["theory_std"] for r in hidden]}
    counts = np.stack([result.probe.histogram(i)[0] for i in range(len(result.summary))])
    csv = result.table.to_csv(_fresh(out, "layers.csv"))
    return [figures.std_vs_depth({"measured": curve}, _fresh(out, "std_vs_depth.png"),
                                 title="output std of each hidden layer (band: min-max over "
                                       "replicas)"),
            figures.histogram_image(counts, _fresh(out, "histograms.png"),
                                    title="outputs of each layer, replica 0"), csv]


def _fresh(folder: str, name: str):
    """folder/name, or folder/name-2... if that exists: results are never overwritten."""
    from pathlib import Path

    path = Path(folder) / name
    stem, suffix, k = path.stem, path.suffix, 2
    while path.exists():
        path, k = path.with_name(f"{stem}-{k}{suffix}"), k + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _theory(args: argparse.Namespace, console: Console) -> int:
    import math

    from initlab import theory

    critical = theory.critical_sigma_w(args.activation, args.sigma_b)
    sigma_w = critical if args.sigma_w is None else args.sigma_w
    q = theory.fixed_point(args.activation, sigma_w, args.sigma_b)
    chi = theory.chi1(args.activation, sigma_w, args.sigma_b)
    xi_q, xi_c = theory.depth_scales(args.activation, sigma_w, args.sigma_b)
    phase = "critical" if abs(chi - 1) < 1e-6 else "ordered (vanishing)" if chi < 1 \
        else "chaotic (exploding)"
    table = Table(title=f"mean-field theory: {args.activation}, sigma_b = {args.sigma_b:g}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    table.add_row("critical sigma_w", f"{critical:.6g}", "chi_1 = 1: the edge of chaos")
    table.add_row("sigma_w", f"{sigma_w:.6g}", "weights ~ N(0, sigma_w^2 / fan_in)")
    table.add_row("q*", f"{q:.6g}", "fixed point of the pre-activation variance")
    table.add_row("chi_1", f"{chi:.6g}", phase)
    for name, xi, what in (("xi_q", xi_q, "variance"), ("xi_c", xi_c, "correlation")):
        table.add_row(name, "inf" if math.isinf(xi) else _fmt(xi),
                      f"layers for the {what} to reach its fixed point")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initlab",
        description="A laboratory for neural-network weight initialization.",
    )
    parser.add_argument("--version", action="version", version=f"initlab {initlab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    listing = commands.add_parser("list", help="list the initializers and the experiment cards",
                                  description="List every registered initializer (with its "
                                              "aliases and formula) and the experiment cards.")
    listing.add_argument("pattern", nargs="?", default="*",
                         help="shell-style filter on names, e.g. 'he_*' (default: all)")
    listing.add_argument("--cards", action="store_true",
                         help="describe every experiment card: its claims, variants, sizes "
                              "and negative control (what docs/cards.md holds)")
    listing.add_argument("--markdown", action="store_true",
                         help="with --cards: print the Markdown source")
    listing.set_defaults(run=_list)

    def run_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--seeds", type=int, default=None,
                         help="seeds 0 ... N-1 for every variant (default: each card's own "
                              "for its size; a card that cannot run N refuses and says its "
                              "maximum); the report shows the seeds beside every claim")
        sub.add_argument("--out", default="runs",
                         help="folder for run folders (default ./runs); a run never "
                              "overwrites another")
        sub.add_argument("--data", default=None,
                         help="image data: a folder of MNIST-format IDX files (gzipped or "
                              "not), 'fashion-mnist' or 'digits' (default: Fashion-MNIST "
                              "where Debian's package is installed, else digits)")
        sub.add_argument("--size", choices=("tiny", "default", "full"), default="default",
                         help="'tiny' runs every card in seconds, for a smoke test; 'full' "
                              "runs more seeds and longer budgets")
        sub.add_argument("--depth", type=int, default=None,
                         help="fixup card: also run residual networks of this many blocks "
                              "(e.g. 10000)")

    repro = commands.add_parser(
        "reproduce", help="run every experiment card and write the report (the main job)",
        description="Run every experiment card (docs/cards.md) at its default size, check each "
                    "claim "
                    "of the sources over many seeds, print the claims table and write a run "
                    "folder with results.json, tables, figures, report.md and index.html.")
    run_options(repro)
    repro.set_defaults(run=_reproduce)

    run = commands.add_parser("run", help="run one experiment card",
                              description="Run one card and write its run folder and report.")
    run.add_argument("card", help="card name, see `initlab list`")
    run_options(run)
    run.set_defaults(run=_run)

    report = commands.add_parser("report", help="re-render the report of a run folder",
                                 description="Write report.md and index.html again from a run "
                                             "folder's saved files (no training).")
    report.add_argument("run_dir", help="a run folder (holds results.json)")
    report.set_defaults(run=_report)

    listing_runs = commands.add_parser(
        "runs", help="list the runs under a folder",
        description="List the run folders under DIR (default ./runs): when each started, its "
                    "cards, verdict counts, size, seeds and duration.")
    listing_runs.add_argument("dir", nargs="?", default="runs",
                              help="folder to search (default ./runs)")
    listing_runs.set_defaults(run=_runs)

    comparing = commands.add_parser(
        "compare", help="the claims whose verdict or headline changed between two runs",
        description="Compare two run folders claim by claim and show, side by side, every "
                    "claim whose verdict or headline number differs (or that one run lacks).")
    comparing.add_argument("run_a", help="a run folder (holds results.json)")
    comparing.add_argument("run_b", help="another run folder")
    comparing.set_defaults(run=_compare)

    grad = commands.add_parser(
        "gradcheck", help="check back-propagation against finite differences",
        description="Build a small network for every hidden activation x loss and compare "
                    "every analytic gradient with central finite differences (float64). "
                    "Exits 1 if any combination fails.")
    grad.add_argument("--activation", default="all",
                      help="hidden activation to check, or 'all' (default)")
    grad.add_argument("--loss", default="all", help="loss to check, or 'all' (default)")
    grad.add_argument("--layers", default="4,8,6",
                      help="input,hidden...,  widths of the network before the output "
                           "(default 4,8,6)")
    grad.add_argument("--samples", type=int, default=16, help="batch size (default 16)")
    grad.add_argument("--tol", type=float, default=1e-6,
                      help="largest relative error that passes (default 1e-6)")
    grad.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")
    grad.set_defaults(run=_gradcheck)

    insp = commands.add_parser(
        "inspect", help="per-layer statistics of a network at init, with the theory beside",
        description="Build a network, forward and back-propagate one probe batch through "
                    "every replica, and print each layer's output std (with the mean-field "
                    "prediction), dead and saturated fractions, gradient std and a verdict.")
    insp.add_argument("--layers", default="784,512x10,10",
                      help="widths, WxK repeats W K times (default 784,512x10,10)")
    insp.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    insp.add_argument("--init", default=None,
                      help="weight initializer, see `initlab list` (default he_normal; with "
                           "--torch, the module's own init unless given)")
    insp.add_argument("--data", default="gaussian",
                      help="fashion-mnist, digits, gaussian (default) or a folder of IDX files")
    insp.add_argument("--replicas", type=int, default=5, help="independent draws (default 5)")
    insp.add_argument("--batch", type=int, default=256, help="probe batch size (default 256)")
    insp.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    insp.add_argument("--out", help="folder for figures and the per-layer CSV (never "
                                    "overwritten)")
    insp.add_argument("--torch", metavar="MODULE:FUNCTION",
                      help="inspect the torch.nn.Module that MODULE.FUNCTION() returns instead")
    insp.add_argument("--input-shape", default=None,
                      help="with --torch: one sample's shape, e.g. 3,32,32 (default: the "
                           "first Linear layer's in_features)")
    insp.set_defaults(run=_inspect)

    doc = commands.add_parser(
        "doctor", help="audit a torch model's initialization, read-only, with fixes to paste",
        description="Load the torch.nn.Module that MODULE.FUNCTION() returns, pass a Gaussian "
                    "batch forward and backward (nothing of the model changes) and, per Linear "
                    "/ convolution layer, say the init it was drawn with (a KS test), forward "
                    "and backward gain, dead and saturated fractions, the mean-field "
                    "expectation, a verdict and a fix as code.")
    doc.add_argument("factory", metavar="MODULE:FUNCTION",
                     help="a function that returns the model, called without arguments")
    doc.add_argument("--input-shape", default=None,
                     help="one sample's shape, e.g. 3,32,32 (default: the first Linear "
                          "layer's in_features)")
    doc.add_argument("--batch", type=int, default=64, help="example batch size (default 64)")
    doc.add_argument("--seed", type=int, default=0, help="seed of the example batch")
    doc.add_argument("--json", action="store_true",
                     help="print a JSON document (summary and one object per layer)")
    doc.add_argument("--fail-on", default=None, metavar="VERDICTS",
                     help="exit 1 if any layer has one of these verdicts, e.g. "
                          "exploding,vanishing,dead (overflow, exploding, vanishing, dead, "
                          "saturated)")
    doc.set_defaults(run=_doctor)

    theo = commands.add_parser(
        "theory", help="mean-field critical point and depth scales of an activation",
        description="The edge of chaos (chi_1 = 1) and the depth scales of a wide network "
                    "with weights N(0, sigma_w^2/fan_in) and biases N(0, sigma_b^2).")
    theo.add_argument("--activation", default="tanh", help="activation (default tanh)")
    theo.add_argument("--sigma-b", type=float, default=0.0, help="bias std (default 0)")
    theo.add_argument("--sigma-w", type=float, default=None,
                      help="weight scale to evaluate (default: the critical one)")
    theo.set_defaults(run=_theory)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    console = Console()
    try:
        return args.run(args, console)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]initlab {args.command}: {escape(str(err))}[/]")
        return 2
    except MemoryError as err:
        console.print(f"[red]initlab {args.command}: out of memory: {escape(str(err))}[/]")
        return 2
    except OSError as err:  # a folder that cannot be written, a disk that is full
        where = f" {err.filename}" if err.filename else ""
        console.print(f"[red]initlab {args.command}: cannot write{escape(where)}: "
                      f"{escape(err.strerror or str(err))}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
