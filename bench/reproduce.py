"""Benchmark: ``initlab reproduce`` at its default size against the code of another commit.

The issue "Engine v2" asks for reproduce in at most half the time of the code it was filed
against (``--baseline``, default 7e94bc4, the last commit before Engine v2), both measured in
the same session on the same machine, and for the first run of a fresh install (an empty
numba cache) beside it.

The baseline is checked out into a temporary git worktree and run from its own source
(``PYTHONPATH``), this checkout's code from ``src/``; every round runs both, alternating which
goes first, each in a fresh process writing to its own folder. Reported: each run's wall
time, the ratio current / baseline within each round and its median, and each card's seconds
(from the runs' results.json) as the median over the rounds. ``--cold`` adds one run of the
current code with an empty NUMBA_CACHE_DIR (its compile step included) after the rounds.

The two codes need not run the same cards nor the same work per card: the per-card table says
which cards each ran and what each took. ``--cards a,b`` times the same work instead: each
named card run alone (``initlab run CARD``, a fresh process each) by both codes, and the
ratio of the sums of their seconds.

    python bench/reproduce.py --rounds 2 --cold --json bench-reproduce.json
    python bench/reproduce.py --cards moons,symmetry,deep-linear,logistic,lsuv,gradcheck
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "7e94bc4"


def run(source: Path, out: Path, args: list[str], env: dict[str, str] | None = None,
        command: tuple[str, ...] = ("reproduce",)) -> dict:
    """One ``initlab reproduce`` (or ``command``) from ``source``/src into a new folder under
    ``out``: its wall seconds and each card's seconds."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("run-*"))
    environment = {**os.environ, "PYTHONPATH": str(source / "src"), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "initlab.cli", *command, "--out", str(out),
                           *args], env=environment, cwd=source, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} from {source} failed (exit {proc.returncode}):"
                         f"\n{proc.stderr[-3000:]}")
    (folder,) = set(out.glob("run-*")) - before
    cards = json.loads((folder / "results.json").read_text())["cards"]
    return {"wall": wall, "cards": {c["name"]: c.get("seconds", 0.0) for c in cards}}


def run_each(source: Path, out: Path, cards: list[str]) -> dict:
    """``initlab run CARD`` for each card, a process each: the sum of the cards' seconds as
    the wall (the processes' own start-up left out, as it differs from a reproduce's)."""
    timed = [run(source, out, [], command=("run", card)) for card in cards]
    seconds = {name: t for r in timed for name, t in r["cards"].items()}
    return {"wall": sum(seconds.values()), "cards": seconds,
            "process_wall": sum(r["wall"] for r in timed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"commit (default {BASELINE})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold", action="store_true",
                        help="also one run of this code with an empty numba cache")
    parser.add_argument("--json", metavar="PATH", help="save every time and ratio here")
    parser.add_argument("--cards", metavar="A,B", help="time these cards alone, one process "
                        "each, instead of reproduce (the same work in both codes)")
    parser.add_argument("reproduce_args", nargs="*",
                        help="passed to this code's reproduce (after --), e.g. -- --jobs 2")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}")
    cards = [c for c in (args.cards or "").split(",") if c]
    if args.cards is not None and (not cards or args.cold or args.reproduce_args):
        parser.error(f"--cards takes card names, without --cold or reproduce arguments; got "
                     f"--cards={args.cards!r}")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="initlab-bench-") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.baseline], check=True, capture_output=True)
        try:
            rounds = []
            for k in range(args.rounds):
                order = [("baseline", base, []), ("current", ROOT, args.reproduce_args)]
                if k % 2:
                    order.reverse()
                timed = {}
                for name, source, extra in order:
                    console.print(f"round {k + 1}: {name} ...")
                    timed[name] = (run_each(source, Path(tmp) / name, cards) if cards else
                                   run(source, Path(tmp) / name, extra))
                timed["ratio"] = timed["current"]["wall"] / timed["baseline"]["wall"]
                rounds.append(timed)
            cold = None
            if args.cold:
                console.print("cold: current, empty numba cache ...")
                cold = run(ROOT, Path(tmp) / "cold", args.reproduce_args,
                           {"NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
    report = _report(args, rounds, cold)
    _print(console, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"saved {args.json}")


def _report(args: argparse.Namespace, rounds: list[dict], cold: dict | None) -> dict:
    names = list(dict.fromkeys(n for r in rounds for side in ("baseline", "current")
                               for n in r[side]["cards"]))
    cards = {name: {side: (statistics.median(r[side]["cards"][name] for r in rounds)
                           if name in rounds[0][side]["cards"] else None)
                    for side in ("baseline", "current")} for name in names}
    return {"argv": sys.argv, "baseline": args.baseline, "rounds": rounds, "cold": cold,
            "median_ratio": statistics.median(r["ratio"] for r in rounds), "cards": cards,
            "cards_alone": bool(args.cards),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def _print(console: Console, report: dict) -> None:
    what = "the cards alone, sum of their seconds" if report["cards_alone"] else "reproduce"
    table = Table(title=f"initlab {what}: this code / {report['baseline']}")
    for column in ("round", "baseline s", "current s", "current / baseline"):
        table.add_column(column, justify="right")
    for k, r in enumerate(report["rounds"], 1):
        table.add_row(str(k), f"{r['baseline']['wall']:.1f}", f"{r['current']['wall']:.1f}",
                      f"{r['ratio']:.2f}")
    table.add_row("median", "", "", f"{report['median_ratio']:.2f}")
    console.print(table)
    cards = Table(title="seconds per card (median over the rounds; - : not run)")
    for column in ("card", "baseline", "current"):
        cards.add_column(column, justify="right" if column != "card" else "left")
    for name, sides in report["cards"].items():
        cards.add_row(name, *("-" if s is None else f"{s:.1f}" for s in sides.values()))
    console.print(cards)
    if report["cold"]:
        cold = report["cold"]["wall"]
        console.print(f"first run, empty numba cache: {cold:.1f} s (its ratio to the first "
                      f"round's baseline: {cold / report['rounds'][0]['baseline']['wall']:.2f})")


if __name__ == "__main__":
    main()
