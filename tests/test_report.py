"""The runner's run folder and the report rendered from it, down to a headless browser."""

import html
import json
import shutil
import subprocess

import numpy as np
import pytest

from initlab.experiments import moons, runner
from initlab.experiments.card import Card, Config, Control, Outcome, Variant, sizes, spread
from initlab.report import render


def _card(name, verdicts, *, interrupt=False, figure=True, text="claim {i}"):
    """A made-up card: its claims have the given verdicts."""
    card = Card(name, title=f"title {name}", claim=f"{name} says so", why="because",
                data="made up", sizes=sizes(Config(seeds=3)), variants={"v": Variant("zeros")},
                control=Control(()))

    @card.measure
    def measure(run):
        if interrupt:
            raise KeyboardInterrupt
        return run.seeds

    for i, verdict in enumerate(verdicts):
        card.claim(f"{name}.{i}", text.format(i=i), printed="printed")(
            lambda seeds, v=verdict: Outcome(v == "holds", "headline 2", spread([1, 2, 3])))
    card.table("table")(lambda seeds: [{"seed": s, "x": s * 2} for s in seeds])
    if figure:
        @card.figure(f"{name}-fig")
        def draw(seeds, path):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots()
            ax.plot([0, 1], [1, 0])
            fig.savefig(path)
            plt.close(fig)
    card.notes(lambda seeds: ["a note"])
    return card


def test_results_json_has_the_stable_shape(tmp_path):
    folder, results = runner.run_cards([_card("a", ["holds", "fails"])], seeds=[0, 1, 2],
                                       out=tmp_path)
    payload = json.loads((folder / "results.json").read_text())
    assert set(payload) >= {"initlab_version", "seeds", "data", "cards", "wall_seconds", "jobs"}
    assert payload["seeds"] == [0, 1, 2] and payload["jobs"] == 1
    assert payload["wall_seconds"] >= payload["cards"][0]["seconds"]  # one card after another
    card = payload["cards"][0]
    assert card["name"] == "a" and card["seconds"] >= 0
    assert [c["verdict"] for c in card["claims"]] == ["holds", "fails"]
    assert set(card["claims"][0]) == {"id", "claim", "source_printed", "measured", "verdict",
                                      "headline", "seeds", "replicas"}
    assert card["claims"][0]["measured"] == "2 ± 0.8165 [min 1, max 3]"
    assert (folder / "tables" / "a-table.csv").read_text().splitlines()[0] == "seed,x"
    config = json.loads((folder / "config.json").read_text())
    assert config["seeds"] == [0, 1, 2] and config["versions"]["numpy"] == np.__version__
    import matplotlib
    import scipy
    import sklearn

    assert {k: config["versions"][k] for k in ("scipy", "scikit-learn", "matplotlib")} == {
        "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__}


def test_the_data_libraries_load_before_the_first_card(tmp_path, monkeypatch):
    """In one process the runner imports scikit-learn's datasets before timing any card, so
    that the first card's seconds do not hold the import."""
    events = []
    monkeypatch.setattr(runner, "load_data_libraries", lambda: events.append("load"))
    timed = runner._timed
    monkeypatch.setattr(runner, "_timed", lambda card, *a: events.append(card.name)
                        or timed(card, *a))
    runner.run_cards([_card("a", ["holds"]), _card("b", ["holds"])], seeds=[0], out=tmp_path)
    assert events == ["load", "a", "b"]


def test_runs_are_never_overwritten(tmp_path):
    first, _ = runner.run_cards([_card("a", ["holds"])], seeds=[0], out=tmp_path)
    second, _ = runner.run_cards([_card("a", ["holds"])], seeds=[0], out=tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_an_interrupted_run_keeps_finished_cards(tmp_path):
    cards = [_card("a", ["holds"]), _card("b", ["holds"], interrupt=True), _card("c", ["holds"])]
    folder, results = runner.run_cards(cards, seeds=[0], out=tmp_path)
    payload = json.loads((folder / "results.json").read_text())
    assert payload["interrupted"] is True
    assert [c["claims"][0]["verdict"] for c in payload["cards"]] == ["holds", "not run",
                                                                     "not run"]


def test_report_is_rendered_from_the_folder_alone(tmp_path):
    folder, _ = runner.run_cards([_card("a", ["holds", "fails"])], seeds=[0, 1], out=tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)  # nothing but the folder's files is needed
    md, index = render.render(moved)
    page = index.read_text()
    assert "data:image/png;base64," in page and "src=\"http" not in page
    assert "claim 1" in page and "a says so" in page and "because" in page
    assert page.count("class=\"verdict ") == 2 + 2 + 2  # summary, claims table, card table
    assert "| claim 0 | printed | 2 ± 0.8165 [min 1, max 3] |" in md.read_text()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        render.render(tmp_path / "nothing")


def test_missing_figure_is_said_not_hidden(tmp_path):
    folder, _ = runner.run_cards([_card("a", ["holds"])], seeds=[0], out=tmp_path)
    (folder / "figures" / "a-fig.png").unlink()
    assert "is missing from the run folder" in render.html_report(folder).read_text()


def test_moons_card_end_to_end_and_a_wrong_variant_fails(tmp_path):
    folder, (result,) = runner.run_cards([moons.card], seeds=[0, 1], out=tmp_path, size="tiny")
    verdicts = {c.id: c.verdict for c in result.claims}
    assert verdicts["E1.zeros-ln2"] == "holds" and verdicts["E1.zeros-chance"] == "holds"
    assert verdicts["E1.large-start"] == "holds"
    assert all((folder / f).is_file() for f in result.figures)
    # the control, He replaced by zeros: the accuracy claim must fail
    assert moons.card.control.variants["he"].init == "zeros"
    _, (wrong,) = runner.run_cards([moons.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                   control=True)
    assert {c.id: c.verdict for c in wrong.claims}["E1.he-accuracy"] == "fails"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_index_html_loads_every_image_in_a_headless_browser(tmp_path):
    folder, _ = runner.run_cards([_card("a", ["holds"]), _card("b", ["fails"])], seeds=[0],
                                 out=tmp_path)
    _, index = render.render(folder)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", index.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-images="2"' in dom and 'data-loaded="2"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1400", index.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_band_curves_draws_each_band_and_marks_the_marked(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from initlab.report import figures

    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    layers = np.arange(5.0)
    curves = {"a": {"mean": 1 + layers, "min": 0.5 + layers, "max": 2 + layers,
                    "theory": 1 + layers},
              "b": {"mean": np.array([1.0, 0.5, 0.0, np.inf, 0.1]), "min": np.ones(5),
                    "max": np.ones(5)}}
    path = figures.band_curves(curves, tmp_path / "f.png", first_layer=1, ylabel="std",
                               title="t", marked={"b"})
    assert path.read_bytes()[:4] == b"\x89PNG"
    lines = {line.get_label(): line for line in drawn[0].axes[0].get_lines()}
    assert lines["a"].get_linestyle() == "-" and lines["b"].get_linestyle() == "-."
    assert list(lines["a"].get_xdata()) == [1, 2, 3, 4, 5]  # from first_layer on
    # a log axis cannot draw 0 or inf: they become gaps
    assert np.isnan(lines["b"].get_ydata()[[2, 3]]).all()
    assert len(drawn[0].axes[0].collections) == 2  # one band per curve


def _tables(markdown_text):
    """Every table of a Markdown text as parsed by markdown-it (CommonMark + GFM tables):
    a list of rows, each a list of cell texts."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(markdown_text)
    tables, row, cell = [], None, None
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            cell = ""
        elif token.type == "inline" and cell is not None:
            cell += html.unescape(token.content)  # the text a reader sees
        elif token.type in ("th_close", "td_close"):
            row.append(cell)
            cell = None
        elif token.type == "tr_close":
            tables[-1].append(row)
    return tables


def test_report_md_is_valid_markdown_and_every_row_keeps_its_verdict(tmp_path):
    card = _card("a", ["holds", "fails", "holds"], text="max |cost − ln 2| of claim {i} <b>")
    folder, _ = runner.run_cards([card], seeds=3, out=tmp_path)
    md, _ = render.render(folder)
    tables = _tables(md.read_text())
    assert len(tables) == 2  # the verdicts, the card's claims
    verdicts, claims = tables
    assert verdicts[0] == ["verdict", "claim", "headline", "seeds", "card"]
    assert claims[0][-1] == "verdict"
    for table in tables:
        for row in table[1:]:
            assert len(row) == len(table[0])
        verdict_column = [row[table[0].index("verdict")] for row in table[1:]]
        assert len(verdict_column) == 3
        assert all(v.strip("*") in ("holds", "fails") for v in verdict_column)
    # the first table ranks the failing claim first; every claim keeps its text whole
    assert [row[0] for row in verdicts[1:]] == ["**fails**", "**holds**", "**holds**"]
    assert verdicts[1][1] == "max |cost − ln 2| of claim 1 <b>"
    assert verdicts[1][3] == "3 seeds (0–2)"


def test_the_first_screen_lists_failing_claims_first_with_seeds_and_contents(tmp_path):
    cards = [_card("a", ["holds", "holds"]), _card("b", ["holds", "fails"])]
    folder, _ = runner.run_cards(cards, seeds=3, out=tmp_path)
    page = render.html_report(folder).read_text()
    first = page[page.index('<table id="verdicts">'):page.index("</table>")]
    rows = first.split("<tr")[2:]  # after the header
    assert len(rows) == 4
    assert "fails" in rows[0] and all("holds" in r and "fails" not in r for r in rows[1:])
    assert all("3 seeds (0–2)" in r for r in rows)
    assert "headline 2" in first and "2 ± 0.8165" not in first  # the evidence waits below
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert 'href="#a"' in nav and 'href="#b"' in nav and "1 fails, 1 holds" in nav
    assert page.index("<nav>") < page.index('<table id="verdicts">')  # on the first screen
    assert "&lt;" not in _card("x", []).title  # (a sanity check of the helper)


def test_seeds_text_names_the_seeds_and_replicas():
    assert render.seeds_text({"seeds": [0, 1, 2], "replicas": 9}) == "3 seeds (0–2), 9 replicas"
    assert render.seeds_text({"seeds": [0], "replicas": 1}) == "1 seed (0)"
    assert render.seeds_text({"seeds": [0, 2], "replicas": 2}) == "2 seeds (0, 2)"
    assert render.seeds_text({"seeds": []}) == ""


def test_runs_lists_every_run_and_compare_shows_what_changed(tmp_path, capsys):
    from initlab.cli import main
    from initlab.report import runs

    first, _ = runner.run_cards([_card("a", ["holds", "holds"])], seeds=2, out=tmp_path)
    second, _ = runner.run_cards([_card("a", ["holds", "fails"]), _card("b", ["holds"])],
                                 seeds=3, out=tmp_path)
    assert runs.find(tmp_path) == [first, second]
    row = runs.summary(second)
    assert row["cards"] == ["a", "b"] and row["counts"] == {"fails": 1, "not run": 0,
                                                           "holds": 2}
    assert row["seeds"] == 3 and row["size"] == "default"
    changed = runs.compare(first, second)
    assert [r["id"] for r in changed] == ["a.1", "b.0"]  # a.0 is the same in both
    assert changed[0]["a"]["verdict"] == "holds" and changed[0]["b"]["verdict"] == "fails"
    assert changed[1]["a"] is None  # only the second run has card b
    assert runs.compare(first, first) == []
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert first.name in out and second.name in out and "2 run(s)" in out
    assert main(["compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "a.1" in out and "b.0" in out and "a.0" not in out and "2 claim(s) differ" in out
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no folder" in capsys.readouterr().out


def test_cost_panels_mark_where_a_line_stops_and_keep_the_legend_off_the_data(tmp_path,
                                                                               monkeypatch):
    import matplotlib.pyplot as plt

    from initlab.report import figures

    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    epochs = [0, 1, 2, 3]
    overflow = np.array([[1.0, 10.0, np.inf, np.nan], [1.0, 20.0, np.inf, np.nan]])
    fine = np.array([[1.0, 0.5, 0.25, 0.1]])
    never = np.full((1, 4), np.nan)
    figures.cost_panels({"A": {"he": overflow, "fixup": fine}, "B": {"he": never}}, epochs,
                        tmp_path / "c.png", title="t")
    fig = drawn[0]
    a, b = fig.axes[:2]
    crosses = [line for line in a.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [1]  # he stops after epoch 1
    assert [t.get_text() for t in a.texts] == ["overflow"]  # inf came next
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "he", "fixup", "he: not finite, not drawn"]
    assert a.get_legend() is None and b.get_legend() is None  # one legend, outside the axes
    colors = {line.get_label(): line.get_color() for ax in (a, b) for line in ax.get_lines()}
    assert colors["he"] != colors["fixup"]


def test_band_curves_mark_an_overflow_and_an_underflow_and_keep_the_legend_outside(
        tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from initlab.report import figures

    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    up = np.array([1.0, 1e20, np.inf, np.inf])
    down = np.array([1.0, 1e-20, 0.0, 0.0])
    figures.band_curves({"up": {"mean": up, "min": up, "max": up},
                         "down": {"mean": down, "min": down, "max": down}},
                        tmp_path / "b.png", first_layer=1, ylabel="std", title="t")
    ax = drawn[0].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["overflow", "underflow"]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert sorted(float(c.get_xdata()[0]) for c in crosses) == [2.0, 2.0]  # layer 2: the last
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # right of the axes


def test_histogram_label_says_what_the_axis_leaves_out(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from initlab.probes import HIST_EDGES
    from initlab.report import figures

    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    counts = np.zeros((2, len(HIST_EDGES) - 1))
    counts[:, 25] = 10  # values near 0 only: the axis zooms to them
    figures.histogram_image(counts, tmp_path / "h.png")
    counts[0, 0], counts[1, -1] = 2, 1  # three values beyond the inner bins
    figures.histogram_image(counts, tmp_path / "h2.png")
    labels = [fig.axes[0].get_xlabel() for fig in drawn]
    assert labels[0] == "output value (bins of 0.2; every value drawn)"
    assert labels[1] == "output value (bins of 0.2; 3 values beyond ±5 not drawn)"


def test_the_report_gives_the_run_time_and_the_cards_time_of_a_run_in_workers(tmp_path):
    """Cards in worker processes overlap: the run's time is its wall time, the cards' sum is
    said beside it; a run written before the wall time was kept gives the cards' sum."""
    folder, _ = runner.run_cards([_card("a", ["holds"])], out=tmp_path)
    results = json.loads((folder / "results.json").read_text())
    results.update(wall_seconds=10.0, jobs=2)
    results["cards"][0]["seconds"] = 17.0
    (folder / "results.json").write_text(json.dumps(results))
    context = render.context(folder)
    assert (context["seconds"], context["card_seconds"], context["jobs"]) == (10.0, 17.0, 2)
    assert "10 s (17 s of card time in 2 worker processes)" in \
        (render.markdown(folder)).read_text()
    del results["wall_seconds"], results["jobs"]
    (folder / "results.json").write_text(json.dumps(results))
    assert render.context(folder)["seconds"] == 17.0
    assert "of card time" not in render.markdown(folder).read_text()
