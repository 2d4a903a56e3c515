"""The PyTorch commands of ``initlab``: ``inspect --torch`` and ``doctor``. They print; the work
lives in ``initlab.torch``."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from initlab.cli_format import fmt as _fmt
from initlab.cli_format import fresh as _fresh
from initlab.cli_format import percent as _percent


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
    listed = f"; {len(report.weights)} other weights listed" if report.weights else ""
    console.print(f"[bold]initlab doctor {escape(args.factory)}[/]: {summary['layers']} "
                  f"Linear / convolution layers on a Gaussian batch of {args.batch}: "
                  f"{counts or 'none measured'}{listed}.")
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
    notes = [(row["path"], row["note"]) for row in report.layers if row.get("note")]
    if notes:  # why a verdict differs from the statistics' (stats_verdict), or why no fix
        console.print("Notes:")
        for path, note in notes:
            console.print(f"  {escape(path)}: {escape(note)}")
    if report.weights:
        others = Table(title="other weights (their init recognised; gains not measured: see "
                             "the notes below)")
        for column in ("weight", "shape", "init", "note"):
            others.add_column(column, overflow="fold")
        why = list(dict.fromkeys(row["note"] or "" for row in report.weights))
        for row in report.weights:
            others.add_row(escape(row["path"]), "x".join(map(str, row["shape"])),
                           escape(row["init"]["code"]), f"[{why.index(row['note'] or '') + 1}]")
        console.print(others)
        for k, text in enumerate(why, 1):
            console.print(f"  [{k}] {escape(text)}", highlight=False)
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
