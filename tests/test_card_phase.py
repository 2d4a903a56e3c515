"""The phase card runs the same trainings as `initlab sweep` on its grid, and draws the
heatmap with the theory's 6 xi_c."""

from initlab.experiments import phase, runner
from initlab.sweeps import runner as sweeps


def test_the_card_and_a_sweep_of_its_grid_agree(tmp_path):
    result = runner.run_card(phase.card, tmp_path / "card", size="tiny")
    assert {c.id: c.verdict for c in result.claims} == {"phase.band": "holds",
                                                         "phase.correlation": "holds"}
    card_rows = result.tables["phase"]
    cfg = phase.card.config("tiny")
    out = sweeps.run(phase.grid(cfg), tmp_path / "sweep")
    sweep_rows = sweeps.read_csv(out / "results.csv")
    key = lambda r: (int(r["depth"]), float(r["sigma_w2"]), int(r["seed"]))  # noqa: E731
    assert len(card_rows) == len(sweep_rows) == len(cfg.sigma_w2) * len(cfg.depth) * cfg.seeds
    by_key = {key(r): r for r in sweep_rows}
    for r in card_rows:
        s = by_key[key(r)]
        assert r["loss"] == s["loss"] and r["c"] == s["c"] and r["trainable"] == s["trainable"]
    assert result.figures == ["figures/phase-trainability.png", "figures/phase-correlation.png"]
    assert all((tmp_path / "card" / f).stat().st_size > 5000 for f in result.figures)


def test_the_example_grid_file_is_the_cards_full_grid():
    from pathlib import Path

    from initlab.sweeps.grid import Grid

    example = Path(__file__).parents[1] / "examples" / "phase-full.toml"
    assert Grid.from_file(example) == phase.grid(phase.card.config("full"))
