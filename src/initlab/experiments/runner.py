"""The card runner: runs cards, checks their claims, and writes a run folder.

A card is a module with ``NAME``, ``TITLE``, ``CLAIM`` (the source's claim in one sentence),
``WHY`` (two or three sentences for the report) and ``run(ctx) -> CardResult``. It trains all
its seeds x variants as replicas of one model, and judges every claim on the distribution over
seeds. The runner writes, into a new folder per run (never overwritten):

    config.json     resolved settings and versions
    results.json    {"initlab_version", "seeds", "data", "cards": [{"name", "seconds",
                     "claims": [{"id", "claim", "source_printed", "measured", "verdict"}]}]}
    tables/*.csv    per-epoch and per-layer tables of each card
    figures/*.png   the cards' figures
"""

from __future__ import annotations

import csv
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

import initlab

Verdict = Literal["holds", "fails", "not run"]


@dataclass
class Claim:
    id: str
    claim: str
    source_printed: str
    measured: str
    verdict: Verdict


@dataclass
class CardResult:
    name: str
    title: str
    claims: list[Claim]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # paths relative to the run folder
    notes: list[str] = field(default_factory=list)
    data: str = ""  # what data the card used, in words
    seconds: float = 0.0
    summary: str = ""  # the source's claim in one sentence (the card's CLAIM)
    why: str = ""  # two or three sentences on why (the card's WHY)


@dataclass
class Context:
    """What a card gets: the seeds, its size, where to put figures, the image data choice."""

    seeds: list[int]
    folder: Path
    size: Literal["default", "tiny"] = "default"
    data: str | None = None
    progress: Callable[[float], None] = lambda fraction: None
    options: dict[str, Any] = field(default_factory=dict)  # card-specific, such as depth

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"

    def figure(self, name: str) -> Path:
        """Where a card saves a figure (figures/<name>.png)."""
        path = self.folder / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def check(condition: bool | np.bool_) -> Verdict:
    return "holds" if bool(condition) else "fails"


def spread(values: Any, fmt: str = ".4g", scale: float = 1.0) -> str:
    """'mean ± std [min, max]' of values over seeds."""
    v = np.asarray(values, dtype=float).ravel() * scale
    if v.size == 1:
        return format(v[0], fmt)
    return (f"{np.mean(v):{fmt}} ± {np.std(v):{fmt}} "
            f"[min {np.min(v):{fmt}}, max {np.max(v):{fmt}}]")


def stats(values: Any) -> dict[str, float]:
    v = np.asarray(values, dtype=float).ravel()
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
            "max": float(np.max(v))}


def new_run_folder(root: str | Path) -> Path:
    """root/run-YYYYmmdd-HHMMSS (with -2, -3... if taken): a run never overwrites another."""
    root = Path(root)
    stamp = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    folder, k = root / stamp, 2
    while folder.exists():
        folder, k = root / f"{stamp}-{k}", k + 1
    folder.mkdir(parents=True)
    return folder


def _versions() -> dict[str, str]:
    import matplotlib
    import scipy
    import sklearn

    return {"initlab": initlab.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "matplotlib": matplotlib.__version__,
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


def not_run(card: Any) -> CardResult:
    """The placeholder of a card that did not finish: every claim 'not run'."""
    claims = [Claim(cid, text, printed, "", "not run")
              for cid, text, printed in getattr(card, "CLAIMS", [])]
    return CardResult(card.NAME, card.TITLE, claims, summary=getattr(card, "CLAIM", ""),
                      why=getattr(card, "WHY", ""))


def run_cards(cards: Sequence[Any], *, seeds: Sequence[int], out: str | Path,
              size: Literal["default", "tiny"] = "default", data: str | None = None,
              on_card: Callable[[Any], Callable[[float], None]] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Path, list[CardResult]]:
    """Run the cards in order, writing the run folder as each finishes.

    ``on_card(card)`` is called before each card and returns its progress callback (the CLI
    starts a progress bar there). Ctrl-C keeps the finished cards and marks the rest "not run".
    """
    folder = new_run_folder(out)
    seeds = [int(s) for s in seeds]
    options = dict(options or {})
    config = {"seeds": seeds, "size": size, "data": data, "options": options,
              "cards": [c.NAME for c in cards],
              "started": datetime.now().isoformat(timespec="seconds"), "versions": _versions()}
    _write_json(folder / "config.json", config)
    results: list[CardResult] = []
    data_info: dict[str, Any] = {"requested": data or "default"}
    interrupted = False
    for card in cards:
        if interrupted:
            results.append(not_run(card))
            continue
        progress = on_card(card) if on_card else (lambda fraction: None)
        ctx = Context(seeds, folder, size, data, progress, options)
        start = time.perf_counter()
        try:
            result = card.run(ctx)
        except KeyboardInterrupt:
            interrupted = True
            results.append(not_run(card))
            continue
        result.seconds = time.perf_counter() - start
        result.summary, result.why = getattr(card, "CLAIM", ""), getattr(card, "WHY", "")
        for name, rows in result.tables.items():
            if rows:
                _write_table(folder / "tables" / f"{card.NAME}-{name}.csv", rows)
        if result.data:
            data_info[card.NAME] = result.data
        results.append(result)
        _write_results(folder, seeds, data_info, results, cards, interrupted)
    _write_results(folder, seeds, data_info, results, cards, interrupted)
    return folder, results


def _write_results(folder, seeds, data_info, results, cards, interrupted) -> None:
    done = {r.name for r in results}
    payload = {
        "initlab_version": initlab.__version__,
        "seeds": seeds,
        "data": data_info,
        "interrupted": interrupted,
        "cards": [_card_json(r) for r in results]
        + [_card_json(not_run(c)) for c in cards if c.NAME not in done],
    }
    _write_json(folder / "results.json", payload)


def _card_json(r: CardResult) -> dict[str, Any]:
    return {"name": r.name, "title": r.title, "seconds": round(r.seconds, 3),
            "claims": [asdict(c) for c in r.claims], "summary": r.summary, "why": r.why,
            "data": r.data, "figures": r.figures, "notes": r.notes}
