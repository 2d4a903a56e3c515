"""The runner's run folder and the report rendered from it, down to a headless browser."""

import json
import shutil
import subprocess
import types

import numpy as np
import pytest

from initlab.experiments import moons, runner
from initlab.report import render


def _card(name, verdicts, *, interrupt=False, figure=True):
    def run(ctx):
        if interrupt:
            raise KeyboardInterrupt
        path = ctx.figure(f"{name}-fig")
        if figure:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots()
            ax.plot([0, 1], [1, 0])
            fig.savefig(path)
            plt.close(fig)
        claims = [runner.Claim(f"{name}.{i}", f"claim {i}", "printed", runner.spread([1, 2, 3]),
                               v) for i, v in enumerate(verdicts)]
        return runner.CardResult(name, f"title {name}", claims,
                                 {"table": [{"seed": s, "x": s * 2} for s in ctx.seeds]},
                                 [str(path.relative_to(ctx.folder))] if figure else [],
                                 ["a note"], data="made up")

    return types.SimpleNamespace(NAME=name, TITLE=f"title {name}", CLAIM=f"{name} says so",
                                 WHY="because", CLAIMS=[(f"{name}.0", "claim 0", "printed")],
                                 run=run)


def test_results_json_has_the_stable_shape(tmp_path):
    folder, results = runner.run_cards([_card("a", ["holds", "fails"])], seeds=[0, 1, 2],
                                       out=tmp_path)
    payload = json.loads((folder / "results.json").read_text())
    assert set(payload) >= {"initlab_version", "seeds", "data", "cards"}
    assert payload["seeds"] == [0, 1, 2]
    card = payload["cards"][0]
    assert card["name"] == "a" and card["seconds"] >= 0
    assert [c["verdict"] for c in card["claims"]] == ["holds", "fails"]
    assert set(card["claims"][0]) == {"id", "claim", "source_printed", "measured", "verdict",
                                      "headline", "seeds", "replicas"}
    assert card["claims"][0]["measured"] == "2 ± 0.8165 [min 1, max 3]"
    assert (folder / "tables" / "a-table.csv").read_text().splitlines()[0] == "seed,x"
    config = json.loads((folder / "config.json").read_text())
    assert config["seeds"] == [0, 1, 2] and "numpy" in config["versions"]


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
    assert page.count("class=\"verdict\"") == 2 + 2 + 2  # summary, claims table, card table
    assert "| a | claim 0 | printed |" in md.read_text()
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
