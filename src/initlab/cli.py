"""The ``initlab`` command. It parses arguments and prints; the work lives in library functions."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import initlab
from initlab import initializers
from initlab.cli_format import fmt as _fmt
from initlab.cli_format import fresh as _fresh
from initlab.cli_format import percent as _percent
from initlab.cli_runs import _compare, _report, _reproduce, _run, _runs
from initlab.cli_torch import _doctor, _inspect_torch


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


def _theory(args: argparse.Namespace, console: Console) -> int:
    from initlab import theory

    if args.phase:
        return _theory_phase(args, console)
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


def _theory_phase(args: argparse.Namespace, console: Console) -> int:
    """The ordered / chaotic phase diagram over (sigma_w^2, sigma_b^2), theory alone."""
    import numpy as np

    from initlab import theory
    from initlab.cli_format import fresh
    from initlab.report.figures import phase_figure

    sw2 = np.linspace(0.25, 4.0, 31)
    sb2 = np.linspace(0.0, 0.5, 11)
    diagram = theory.phase_diagram(args.activation, sw2, sb2)
    table = Table(title=f"edge of chaos of {args.activation}: chi_1 = 1")
    table.add_column("sigma_b^2", justify="right")
    table.add_column("critical sigma_w^2", justify="right")
    table.add_column("q* there", justify="right")
    for b2, w2 in zip(sb2, diagram["edge_sigma_w2"], strict=True):
        q = math.nan if math.isnan(w2) else theory.fixed_point(args.activation, math.sqrt(w2),
                                                                math.sqrt(b2))
        table.add_row(f"{b2:.3g}", _fmt(w2), _fmt(q))
    console.print(table)
    path = phase_figure(diagram, fresh(args.out or ".", f"phase-{args.activation}.png"),
                        title=f"{args.activation}: ordered (chi_1 < 1) and chaotic (chi_1 > 1)")
    console.print(f"wrote {path}")
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
        sub.add_argument("--jobs", type=int, default=None,
                         help="cards run at once, each in a worker process (default: one per "
                              "core, at most 4; 1 runs them in this process)")
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

    report = commands.add_parser("report", help="re-render the report of a run or sweep folder",
                                 description="Write report.md and index.html again from a run "
                                             "folder's saved files (no training); for a sweep "
                                             "folder, draw its heatmaps.")
    report.add_argument("run_dir", help="a run folder (holds results.json) or a sweep folder "
                                        "(holds sweep.json)")
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
    theo.add_argument("--phase", action="store_true",
                      help="draw the ordered / chaotic phase diagram over sigma_w^2 in "
                           "[0.25, 4] x sigma_b^2 in [0, 0.5] (chi_1, the chi_1 = 1 line and "
                           "xi_c) and print the critical sigma_w^2 per sigma_b^2")
    theo.add_argument("--out", default=None,
                      help="with --phase: folder for the figure (default .; never "
                           "overwritten)")
    theo.set_defaults(run=_theory)

    from initlab.cli_sweep import add_parser as add_sweep

    add_sweep(commands)
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
