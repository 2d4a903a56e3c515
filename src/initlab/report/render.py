"""The report of a run, rendered from the run folder's files alone (results.json, config.json,
figures/): ``report.md`` and a self-contained ``index.html`` (images embedded, no network)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

VERDICT_COLORS = {"holds": "#1a7f37", "fails": "#cf222e", "not run": "#6e7781"}

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #1f2328; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.verdict { font-weight: 600; color: white; border-radius: 4px; padding: 1px 6px; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.5em 0; }
.meta { color: #57606a; font-size: 0.9em; }
blockquote { border-left: 4px solid #d0d7de; margin: 0.8em 0; padding: 0 1em; color: #57606a; }
"""


def load(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = Path(folder)
    if not (folder / "results.json").is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no results.json")
    results = json.loads((folder / "results.json").read_text())
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return results, config


def _all_claims(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(card["name"], claim) for card in results["cards"] for claim in card["claims"]]


def markdown(folder: str | Path) -> Path:
    """Write report.md: the claims table, then one section per card."""
    folder = Path(folder)
    results, config = load(folder)
    lines = [f"# initlab report ({folder.name})", "",
             f"initlab {results['initlab_version']}, seeds {results['seeds']}, "
             f"size {config.get('size', '?')}" + (" (interrupted)" if results.get("interrupted")
                                                 else ""), "",
             "| card | claim | source printed | measured | verdict |", "|---|---|---|---|---|"]
    for name, claim in _all_claims(results):
        lines.append(f"| {name} | {claim['claim']} | {claim['source_printed']} | "
                     f"{claim['measured']} | **{claim['verdict']}** |")
    for card in results["cards"]:
        lines += ["", f"## {card['title']}", ""]
        if card.get("summary"):
            lines += [f"> {card['summary']}", ""]
        if card.get("data"):
            lines += [f"Data: {card['data']}. Time: {card['seconds']:.1f} s.", ""]
        lines += [f"![{Path(fig).stem}]({fig})" for fig in card.get("figures", [])]
        if card.get("why"):
            lines += ["", card["why"]]
        lines += [f"- {note}" for note in card.get("notes", [])]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _badge(verdict: str) -> str:
    color = VERDICT_COLORS.get(verdict, "#6e7781")
    return f'<span class="verdict" style="background:{color}">{html.escape(verdict)}</span>'


def _image(folder: Path, relative: str) -> str:
    path = folder / relative
    if not path.is_file():
        return f"<p><em>figure {html.escape(relative)} is missing from the run folder</em></p>"
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img alt="{html.escape(Path(relative).stem)}" '
            f'src="data:image/png;base64,{encoded}">')


def html_report(folder: str | Path) -> Path:
    """Write index.html: self-contained (figures as data URIs), readable offline."""
    folder = Path(folder)
    results, config = load(folder)
    e = html.escape
    counts = {v: sum(c["verdict"] == v for _, c in _all_claims(results))
              for v in VERDICT_COLORS}
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>initlab report {e(folder.name)}</title><style>{CSS}</style></head><body>",
             "<h1>initlab: the claims of the sources, checked</h1>",
             f"<p class='meta'>Run {e(folder.name)} · initlab {e(results['initlab_version'])} · "
             f"seeds {e(str(results['seeds']))} · size {e(str(config.get('size', '?')))}"
             f"{' · interrupted' if results.get('interrupted') else ''}</p>",
             "<p>" + ", ".join(f"{n} {_badge(v)}" for v, n in counts.items() if n) + "</p>",
             "<table><tr><th>card</th><th>claim</th><th>source printed</th><th>measured "
             "(mean ± std [min, max] over seeds)</th><th>verdict</th></tr>"]
    for name, claim in _all_claims(results):
        parts.append(f"<tr><td><a href='#{e(name)}'>{e(name)}</a></td><td>{e(claim['claim'])}"
                     f"</td><td>{e(claim['source_printed'])}</td><td>{e(claim['measured'])}</td>"
                     f"<td>{_badge(claim['verdict'])}</td></tr>")
    parts.append("</table>")
    for card in results["cards"]:
        parts.append(f"<h2 id='{e(card['name'])}'>{e(card['title'])}</h2>")
        if card.get("summary"):
            parts.append(f"<blockquote>{e(card['summary'])}</blockquote>")
        if card.get("data"):
            parts.append(f"<p class='meta'>Data: {e(card['data'])} · {card['seconds']:.1f} s</p>")
        parts.append("<table><tr><th>claim</th><th>measured</th><th>verdict</th></tr>")
        for claim in card["claims"]:
            parts.append(f"<tr><td>{e(claim['claim'])}</td><td>{e(claim['measured'])}</td>"
                         f"<td>{_badge(claim['verdict'])}</td></tr>")
        parts.append("</table>")
        parts += [_image(folder, fig) for fig in card.get("figures", [])]
        if card.get("why"):
            parts.append(f"<p>{e(card['why'])}</p>")
        if card.get("notes"):
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in card["notes"]) + "</ul>")
    # lets a headless browser (and the tests) see that every figure decoded
    parts.append("<script>window.addEventListener('load', () => { const i = [...document.images];"
                 " document.body.dataset.images = i.length; document.body.dataset.loaded ="
                 " i.filter(x => x.complete && x.naturalWidth > 0).length; });</script>")
    parts.append("</body></html>")
    path = folder / "index.html"
    path.write_text("\n".join(parts))
    return path


def render(folder: str | Path) -> tuple[Path, Path]:
    """Both reports of a run folder."""
    return markdown(folder), html_report(folder)
