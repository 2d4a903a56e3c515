"""The ``initlab`` command. It parses arguments and prints; the work lives in library functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

import initlab
from initlab import initializers


def _list(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="initializers (initlab.initializers.get(name))")
    table.add_column("name", style="bold")
    table.add_column("aliases")
    table.add_column("what it draws")
    for name in initializers.available(args.pattern):
        table.add_row(name, ", ".join(initializers.aliases_of(name)), initializers.describe(name))
    console.print(table)
    return 0


def _gradcheck(args: argparse.Namespace, console: Console) -> int:
    from initlab.experiments.gradcheck import check_all

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initlab",
        description="A laboratory for neural-network weight initialization.",
    )
    parser.add_argument("--version", action="version", version=f"initlab {initlab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    listing = commands.add_parser("list", help="list the initializers, with aliases and formulas",
                                  description="List every registered initializer.")
    listing.add_argument("pattern", nargs="?", default="*",
                         help="shell-style filter on names, e.g. 'he_*' (default: all)")
    listing.set_defaults(run=_list)

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
    except ValueError as err:
        console.print(f"[red]initlab {args.command}: {err}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
