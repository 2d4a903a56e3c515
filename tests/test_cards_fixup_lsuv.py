"""E7 fixup and lsuv at tiny size: their claims compute, and without the scheme they fail."""

import json

import numpy as np
import pytest

from initlab.experiments import fixup, lsuv, runner
from initlab.experiments.card import Variant


def _verdicts(result):
    return {c.id: c.verdict for c in result.claims}


def test_fixup_card_end_to_end(tmp_path):
    folder, (result,) = runner.run_cards([fixup.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                         options={"depth": 24})
    verdicts = _verdicts(result)
    assert verdicts["E7.fixup-flat"] == "holds"  # identity blocks: exactly L-independent
    assert verdicts["E7.he-variance-grows"] == "holds"
    assert all(v in ("holds", "fails") for v in verdicts.values())
    depths = {row["blocks"] for row in result.tables["depths"]}
    assert depths == {4, 16, 24}  # the --depth option adds a depth
    assert json.loads((folder / "config.json").read_text())["options"] == {"depth": 24}
    assert all((folder / f).is_file() for f in result.figures)


def test_without_fixup_the_flat_variance_claim_fails(tmp_path):
    # the control is what this test used to monkeypatch in: "Fixup" left at He
    assert fixup.card.control.variants == {"fixup": Variant(fixup.card.variants["he"].init)}
    assert fixup.card.control.flips == ("E7.fixup-flat",) and not fixup.card.control.config
    _, (result,) = runner.run_cards([fixup.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                    control=True)
    assert _verdicts(result)["E7.fixup-flat"] == "fails"


def test_fixup_trains_claim_fails_when_the_blocks_cannot_learn(tmp_path, monkeypatch):
    from initlab.schemes import fixup as real_fixup

    def frozen(model):  # both branch layers 0: relu'(0) = 0 and h = 0, so no block learns
        real_fixup(model)
        for block in model.layers[1:-1]:
            block.branch[0].params["W"][...] = 0.0
        return model

    monkeypatch.setattr(fixup, "fixup", frozen)  # the fixup variant's scheme calls it
    _, (result,) = runner.run_cards([fixup.card], seeds=[0, 1], out=tmp_path, size="tiny")
    claim = next(c for c in result.claims if c.id == "E7.fixup-trains")
    assert claim.verdict == "fails" and "moved in 0 of 2 seeds" in claim.measured
    monkeypatch.undo()  # the real Fixup: every block learns
    _, (result,) = runner.run_cards([fixup.card], seeds=[0, 1], out=tmp_path, size="tiny")
    claim = next(c for c in result.claims if c.id == "E7.fixup-trains")
    assert claim.verdict == "holds" and "moved in 2 of 2 seeds" in claim.measured


def test_lsuv_card_end_to_end_and_without_lsuv_it_fails(tmp_path):
    folder, (result,) = runner.run_cards([lsuv.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                         data="digits")
    assert _verdicts(result)["lsuv.unit-std"] == "holds"
    assert all((folder / f).is_file() for f in result.figures)
    # the control is a "scheme" that changes nothing: LSUV's replicas keep their own init
    assert lsuv.card.control.variants == {"lsuv": Variant(lsuv.card.variants["lsuv"].init)}
    assert lsuv.card.control.flips == ("lsuv.unit-std",) and not lsuv.card.control.config
    _, (wrong,) = runner.run_cards([lsuv.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                   data="digits", control=True)
    assert _verdicts(wrong)["lsuv.unit-std"] == "fails"


def test_lsuv_card_measures_rather_than_trusting_the_schemes_report(tmp_path, monkeypatch):
    # a "scheme" that changes nothing yet reports success: the card measures, it must fail
    from initlab.schemes import LSUVResult

    monkeypatch.setattr(lsuv, "lsuv", lambda model, X, tol: LSUVResult(
        np.ones((21, 2), bool), np.zeros(21, int), np.ones((21, 2))))
    _, (wrong,) = runner.run_cards([lsuv.card], seeds=[0, 1], out=tmp_path, size="tiny",
                                   data="digits")
    assert _verdicts(wrong)["lsuv.unit-std"] == "fails"


@pytest.mark.parametrize("card", [fixup.card, lsuv.card], ids=lambda c: c.name)
def test_the_seeds_asked_for_are_the_seeds_run(card, tmp_path):
    _, (result,) = runner.run_cards([card], seeds=4, out=tmp_path, size="tiny", data="digits")
    (rows,) = result.tables.values()
    assert {row["seed"] for row in rows} == {0, 1, 2, 3}
    assert all(claim.seeds == [0, 1, 2, 3] for claim in result.claims)
