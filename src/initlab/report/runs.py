"""Past runs: list the run folders under a folder, and compare two runs claim by claim.
Both read the run folders' results.json and config.json only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from initlab.report.render import VERDICTS, load, run_seconds


def find(root: str | Path) -> list[Path]:
    """The run folders (holding results.json) at or under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}")
    folders = {p.parent for p in root.rglob("results.json")}
    return sorted(folders, key=lambda p: (p.stat().st_mtime, str(p)))


def summary(folder: Path) -> dict[str, Any]:
    """One run in a row: when, which cards, verdict counts, size, seeds, duration."""
    results, config = load(folder)
    claims = [c for card in results["cards"] for c in card["claims"]]
    seeds = sorted({s for c in claims for s in c.get("seeds") or []})
    return {"run": str(folder), "started": config.get("started", "?"),
            "cards": [card["name"] for card in results["cards"]],
            "counts": {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS},
            "size": config.get("size", "?"), "seeds": len(seeds),
            "seconds": run_seconds(results),
            "interrupted": bool(results.get("interrupted"))}


def compare(a: str | Path, b: str | Path) -> list[dict[str, Any]]:
    """The claims whose verdict or headline differ between runs a and b (or that only one of
    them has), in a's order then b's: {id, card, claim, a: {verdict, headline}, b: ...}."""
    sides = [_claims(load(Path(folder))[0]) for folder in (a, b)]
    rows = []
    for cid in dict.fromkeys([*sides[0], *sides[1]]):
        left, right = (side.get(cid) for side in sides)
        pair = [{"verdict": c["verdict"], "headline": c.get("headline") or c["measured"]}
                if c else None for c in (left, right)]
        either = left or right
        if pair[0] != pair[1] and either is not None:
            rows.append({"id": cid, "card": either["card"], "claim": either["claim"],
                         "a": pair[0], "b": pair[1]})
    return rows


def _claims(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: {**c, "card": card["name"]} for card in results["cards"]
            for c in card["claims"]}
