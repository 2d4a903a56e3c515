"""The report of a run, rendered from the run folder's files alone (results.json, config.json,
figures/): ``report.md`` and a self-contained ``index.html`` (images embedded, no network).

Both come from Jinja2 templates beside this module; the HTML is escaped by Jinja's autoescape,
Markdown table cells by the ``cell`` filter. Nothing here runs an experiment.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jinja2

VERDICTS = ("fails", "not run", "holds")  # the order the first table shows them in


def load(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = Path(folder)
    if not (folder / "results.json").is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no results.json")
    results = json.loads((folder / "results.json").read_text())
    if not isinstance(results, dict) or not isinstance(results.get("cards"), list):
        raise ValueError(f"{folder / 'results.json'} is not an initlab results file (it has "
                         f"no list of cards)")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return results, config


def seeds_text(claim: dict[str, Any]) -> str:
    """'10 seeds (0–9), 30 replicas'; '' for a claim that did not run."""
    seeds = claim.get("seeds") or []
    if not seeds:
        return ""
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    which = (f"{seeds[0]}–{seeds[-1]}" if contiguous and len(seeds) > 1
             else ", ".join(map(str, seeds)))
    text = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({which})"
    replicas = claim.get("replicas", 0)
    return text + (f", {replicas} replicas" if replicas > len(seeds) else "")


def _cell(text: Any) -> str:
    """Text that stays inside one Markdown table cell."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\r", " ").replace("\n", " "))


def _tally(card: dict[str, Any]) -> str:
    counts = {v: sum(c["verdict"] == v for c in card["claims"]) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("initlab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html.j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(seeds=seeds_text, cell=_cell, tally=_tally,
                       css=lambda verdict: verdict.replace(" ", "-"),
                       stem=lambda path: Path(path).stem)
    return env


def context(folder: str | Path) -> dict[str, Any]:
    """What the templates see: the run's cards, and its claims ranked failing first."""
    folder = Path(folder)
    results, config = load(folder)
    cards = results["cards"]
    claims = [(card, claim) for card in cards for claim in card["claims"]]
    ranked = sorted(claims, key=lambda pair: VERDICTS.index(pair[1]["verdict"])
                    if pair[1]["verdict"] in VERDICTS else 0)
    data = results.get("data")
    images = data.get("images", "") if isinstance(data, dict) else ""
    return {"run": folder.name, "version": results.get("initlab_version", "?"),
            "size": config.get("size", "?"), "interrupted": bool(results.get("interrupted")),
            "seconds": run_seconds(results), "jobs": results.get("jobs", 1),
            "card_seconds": sum(card.get("seconds", 0.0) for card in cards), "cards": cards,
            "ranked": ranked, "data": images,
            "counts": {v: sum(c["verdict"] == v for _, c in claims) for v in VERDICTS}}


def run_seconds(results: dict[str, Any]) -> float:
    """How long the run took: its wall time, or for a run written before it was kept (one card
    after another), the sum of its cards' times."""
    wall = results.get("wall_seconds")
    return float(wall) if wall is not None else \
        sum(card.get("seconds", 0.0) for card in results["cards"])


def markdown(folder: str | Path) -> Path:
    """Write report.md: the verdicts, failing first, then one section per card."""
    folder = Path(folder)
    text = _environment().get_template("report.md.j2").render(context(folder))
    path = folder / "report.md"
    path.write_text(text)
    return path


def html_report(folder: str | Path) -> Path:
    """Write index.html: self-contained (figures as data URIs), readable offline."""
    folder = Path(folder)
    ctx = context(folder)
    ctx["images"] = {fig: base64.b64encode((folder / fig).read_bytes()).decode("ascii")
                     if (folder / fig).is_file() else ""
                     for card in ctx["cards"] for fig in card.get("figures", [])}
    path = folder / "index.html"
    path.write_text(_environment().get_template("report.html.j2").render(ctx))
    return path


def render(folder: str | Path) -> tuple[Path, Path]:
    """Both reports of a run folder."""
    return markdown(folder), html_report(folder)
