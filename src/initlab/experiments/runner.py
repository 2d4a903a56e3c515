"""The card runner: runs cards (see ``experiments.card``), checks their claims, and writes a
run folder. Every card trains all its seeds x variants as replicas and judges every claim on
the distribution over seeds; the runner writes, into a new folder per run (never
overwritten):

    config.json     resolved settings and versions
    results.json    {"initlab_version", "seeds", "data", "interrupted", "wall_seconds",
                     "jobs", "cards": [{"name",
                     "seconds", "claims": [{"id", "claim", "source_printed", "measured",
                     "verdict", "headline", "seeds", "replicas"}], ...}]}
    tables/*.csv    the cards' tidy tables
    figures/*.png   the cards' figures
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

import initlab
from initlab.experiments.card import Card, ClaimSpec, Run, Size

Verdict = Literal["holds", "fails", "not run"]


@dataclass
class Claim:
    id: str
    claim: str
    source_printed: str
    measured: str  # the evidence
    verdict: Verdict
    headline: str = ""  # one line with the headline number
    seeds: list[int] = field(default_factory=list)  # the seeds the verdict rests on
    replicas: int = 0  # and how many replicas


@dataclass
class CardResult:
    name: str
    title: str
    claims: list[Claim]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # paths relative to the run folder
    notes: list[str] = field(default_factory=list)
    data: str = ""  # what data the card used, in words
    images: str = ""  # the image data it loaded, where the run chose it (--data)
    seconds: float = 0.0
    summary: str = ""  # the source's claim in one sentence (the card's CLAIM)
    why: str = ""  # two or three sentences on why (the card's WHY)


def check(condition: bool | np.bool_) -> Verdict:
    return "holds" if bool(condition) else "fails"




def stats(values: Any) -> dict[str, float]:
    v = np.asarray(values, dtype=float).ravel()
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
            "max": float(np.max(v))}


def check_out(root: str | Path) -> Path:
    """The folder runs go under, refused before anything is created when it cannot be: a
    regular file, or a folder that cannot be written. A run folder given as ``root`` puts the
    new run beside it, never inside it."""
    root = Path(root)
    if (root / "results.json").is_file() or (root / "config.json").is_file():
        root = root.parent  # a run folder: its sibling, not a run nested in a run
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--out must be a folder; got --out {root}, and {existing} is a file")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {root} cannot be written ({existing} is not writable)")
    return root


def new_run_folder(root: str | Path) -> Path:
    """root/run-YYYYmmdd-HHMMSS (with -2, -3... if taken): a run never overwrites another; a
    run folder as ``root`` gets a sibling (see :func:`check_out`)."""
    root = check_out(root)
    stamp = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    folder, k = root / stamp, 2
    while folder.exists():
        folder, k = root / f"{stamp}-{k}", k + 1
    folder.mkdir(parents=True)
    return folder


def _versions() -> dict[str, str]:
    # from the installed packages' metadata: importing scikit-learn for its version took 0.7 s
    # before the workers could start
    from importlib.metadata import version

    return {"initlab": initlab.__version__, "python": platform.python_version(),
            "numpy": np.__version__, **{name: version(name) for name in
                                        ("scipy", "scikit-learn", "matplotlib")},
            "platform": platform.platform()}


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def not_run(card: Card[Any]) -> CardResult:
    """The placeholder of a card that did not finish: every claim 'not run'."""
    return CardResult(card.name, card.title, [Claim(c.id, c.text, c.printed, "", "not run")
                                              for c in card.claims],
                      summary=card.summary, why=card.why)


def run_card(card: Card[Any], folder: Path, *, size: Size = "default", seeds: int | None = None,
             data: str | None = None, progress: Callable[[float], None] = lambda f: None,
             options: dict[str, Any] | None = None, control: bool = False) -> CardResult:
    """Run one card: measure, then its claims, tables and figures, into ``folder``. With
    ``control``, the card's negative control is swapped in."""
    cfg = card.config(size, seeds, options)
    variants = dict(card.variants)
    if control:
        variants.update(card.control.variants)
        cfg = dataclasses.replace(cfg, **card.control.config)
    run = Run(card, cfg, variants, data, progress)
    assert card.measure_fn is not None, f"card {card.name!r} declares no measure step"
    # a card's warnings (a replica that diverged, as He at depth does in E7) are part of its
    # results: kept in its notes, not printed over the progress bars
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measured = card.measure_fn(run)
    claims = [_judge(spec, measured, run) for spec in card.claims]
    tables = {name: fn(measured) for name, fn in card.tables.items()}
    figures = []
    for name, draw in card.figures.items():
        path = folder / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(measured, path)
        figures.append(str(path.relative_to(folder)))
    progress(1.0)
    seen = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    notes = card.notes_fn(measured) + [f"Warning while measuring: {text}" for text in seen]
    return CardResult(card.name, card.title, claims, tables, figures, notes,
                      data=run.data_used or card.data, images=run.data_used,
                      summary=card.summary, why=card.why)


def _judge(spec: ClaimSpec, measured: Any, run: Run) -> Claim:
    outcome = spec.judge(measured)
    names = spec.uses if spec.uses is not None else tuple(run.variants)
    used = [run.seeds_of(name) for name in names]
    return Claim(spec.id, spec.text, spec.printed, outcome.evidence or outcome.headline,
                 check(outcome.holds), outcome.headline,
                 sorted({s for seeds in used for s in seeds}),
                 outcome.replicas if outcome.replicas is not None else sum(map(len, used)))


def run_cards(cards: Sequence[Card[Any]], *, seeds: int | Sequence[int] | None = None,
              out: str | Path, size: Size = "default", data: str | None = None,
              on_card: Callable[[Any], Callable[[float], None]] | None = None,
              options: dict[str, Any] | None = None, control: bool = False,
              jobs: int = 1) -> tuple[Path, list[CardResult]]:
    """Run the cards in order, writing the run folder as each finishes.

    ``seeds`` is a count (seeds 0 ... n-1; None: each card's own for its size).
    ``on_card(card)`` is called before each card and returns its progress callback (the CLI
    starts a progress bar there). Ctrl-C keeps the finished cards and marks the rest "not run".
    ``jobs`` > 1 runs that many cards at once in worker processes (started by a fork server,
    never forked from this one; one BLAS thread each); a card's result does not depend on
    where it ran. Then ``on_card`` is called as each card finishes, its progress at 1.
    """
    if seeds is not None and not isinstance(seeds, int):
        seeds = [int(s) for s in seeds]
        if seeds != list(range(len(seeds))):
            raise ValueError(f"seeds are 0 ... n-1, given as a count; got seeds={seeds}")
        seeds = len(seeds)
    options = dict(options or {})
    for card in cards:  # refuse before anything is written
        card.config(size, seeds, options)
    check_out(out)
    folder = new_run_folder(out)
    seed_list = list(range(seeds)) if seeds is not None else []
    config = {"seeds": seed_list, "size": size, "data": data, "options": options,
              "cards": [c.name for c in cards], "control": control,
              "started": datetime.now().isoformat(timespec="seconds"), "versions": _versions()}
    _write_json(folder / "config.json", config)
    results: list[CardResult] = []
    data_info: dict[str, Any] = {"requested": data or "default"}
    interrupted = False
    kwargs = {"size": size, "seeds": seeds, "data": data, "options": options,
              "control": control}
    start = time.perf_counter()
    parallel = jobs > 1 and len(cards) > 1 and all(_registered(c) for c in cards)

    def write() -> None:
        _write_results(folder, seed_list, data_info, results, cards, interrupted,
                       time.perf_counter() - start, min(jobs, len(cards)) if parallel else 1)

    def keep(result: CardResult) -> None:
        for name, rows in result.tables.items():
            if rows:
                _write_table(folder / "tables" / f"{result.name}-{name}.csv", rows)
        if result.data:
            data_info[result.name] = result.data
        if result.images:
            data_info.setdefault("images", result.images)
        results.append(result)
        write()

    if parallel:
        interrupted = _run_in_workers(cards, folder, kwargs, jobs, on_card, keep)
        finished = {r.name: r for r in results}  # in the cards' order, as one process gives
        results[:] = [finished.get(c.name) or not_run(c) for c in cards]
    else:
        load_data_libraries()
        for card in cards:
            if interrupted:
                results.append(not_run(card))
                continue
            progress = on_card(card) if on_card else (lambda fraction: None)
            try:
                keep(_timed(card, folder, progress, kwargs))
            except KeyboardInterrupt:
                interrupted = True
                results.append(not_run(card))
    write()
    return folder, results


def load_data_libraries() -> None:
    """Import scikit-learn's datasets (0.7 s), which most cards' data come from, before the
    first card: a card's seconds are then its own work, wherever it runs (the CLI's worker
    server imports it before it forks a worker)."""
    import sklearn.datasets  # noqa: F401


def _timed(card: Card[Any], folder: Path, progress: Callable[[float], None],
           kwargs: dict[str, Any]) -> CardResult:
    start = time.perf_counter()
    result = run_card(card, folder, progress=progress, **kwargs)
    result.seconds = time.perf_counter() - start
    return result


def _registered(card: Card[Any]) -> bool:
    """Whether a worker process can find the card by its name (a card made in a test or a
    notebook cannot be sent: it runs here)."""
    from initlab import experiments

    return card.name in experiments.names() and experiments.get(card.name) is card


def _in_worker(name: str, folder: Path, kwargs: dict[str, Any]) -> CardResult:
    from initlab import experiments

    return _timed(experiments.get(name), folder, lambda fraction: None, kwargs)


def _one_thread() -> None:
    from threadpoolctl import threadpool_limits

    from initlab.nn import kernels

    # the workers fill the cores; BLAS threads or the kernels' would only compete
    threadpool_limits(1)
    kernels.default_threads(1)


def schedule(cards: Sequence[Card[Any]], root: Path, size: Size,
             runs: int = 20) -> list[Card[Any]]:
    """The cards longest first, as the newest of the last ``runs`` runs under ``root`` at this
    size timed them (a pool that starts the long ones first finishes soonest); a card no run
    timed goes first, and without any timing the order is the cards' own."""
    seconds: dict[str, float] = {}
    for results in sorted(root.glob("run-*/results.json"), reverse=True)[:runs]:
        try:
            config = json.loads((results.parent / "config.json").read_text())
            timed = json.loads(results.read_text())["cards"]
        except (OSError, ValueError, KeyError):
            continue  # a run still being written, or not a run of ours
        if config.get("size") != size:
            continue
        for entry in timed:
            if entry.get("seconds") and all(c.get("verdict") != "not run"
                                            for c in entry.get("claims", ())):
                seconds.setdefault(entry["name"], float(entry["seconds"]))
    return sorted(cards, key=lambda c: -seconds.get(c.name, float("inf")))


def _run_in_workers(cards: Sequence[Card[Any]], folder: Path, kwargs: dict[str, Any],
                    jobs: int, on_card: Callable[[Any], Callable[[float], None]] | None,
                    keep: Callable[[CardResult], None]) -> bool:
    """Run the cards in ``jobs`` worker processes, keeping each result as it comes; True if
    Ctrl-C stopped them (the finished ones are kept)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from initlab.nn.parallel import context

    pool = ProcessPoolExecutor(min(jobs, len(cards)), mp_context=context(),
                               initializer=_one_thread)
    try:
        futures = {pool.submit(_in_worker, c.name, folder, kwargs): c
                   for c in schedule(cards, folder.parent, kwargs["size"])}
        for future in as_completed(futures):
            result = future.result()
            if on_card:
                on_card(futures[future])(1.0)
            keep(result)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        return True
    pool.shutdown(wait=True)
    return False


def _write_results(folder, seeds, data_info, results, cards, interrupted, wall, jobs) -> None:
    done = {r.name for r in results}
    payload = {
        "initlab_version": initlab.__version__,
        "seeds": seeds,
        "data": data_info,
        "interrupted": interrupted,
        "wall_seconds": round(wall, 3),  # the run's time; the cards' sum is more with jobs > 1
        "jobs": jobs,
        "cards": [_card_json(r) for r in results]
        + [_card_json(not_run(c)) for c in cards if c.name not in done],
    }
    _write_json(folder / "results.json", payload)


def _card_json(r: CardResult) -> dict[str, Any]:
    return {"name": r.name, "title": r.title, "seconds": round(r.seconds, 3),
            "claims": [asdict(c) for c in r.claims], "summary": r.summary, "why": r.why,
            "data": r.data, "figures": r.figures, "notes": r.notes}
