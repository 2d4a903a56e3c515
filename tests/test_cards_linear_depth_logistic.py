"""The cards E3 deep-linear, E4 depth and E6 logistic end to end at tiny size: the run folder, the
verdicts that are deterministic, and for each card a negative control, a deliberately wrong
variant whose claim must then fail (so a check that can never fail would be caught)."""

from __future__ import annotations

import json

from initlab.experiments import deep_linear, depth, logistic, runner

VERDICTS = {"holds", "fails"}


def _run(card, tmp_path) -> dict[str, str]:
    """Run one card at tiny size on seeds 0 and 1; check its results.json; claim id -> verdict."""
    folder, _ = runner.run_cards([card], seeds=[0, 1], out=tmp_path, size="tiny")
    payload = json.loads((folder / "results.json").read_text())
    (entry,) = [c for c in payload["cards"] if c["name"] == card.NAME]
    assert [c["id"] for c in entry["claims"]] == [cid for cid, _, _ in card.CLAIMS]
    for claim in entry["claims"]:
        assert claim["verdict"] in VERDICTS, claim
        assert claim["measured"] and claim["source_printed"]
    assert entry["figures"]
    for figure in entry["figures"]:
        assert (folder / figure).is_file()
    assert card.NAME in payload["data"]
    assert list((folder / "tables").glob(f"{card.NAME}-*.csv"))
    return {c["id"]: c["verdict"] for c in entry["claims"]}


def test_deep_linear_identity_is_exact(tmp_path):
    verdicts = _run(deep_linear, tmp_path)
    assert verdicts["E3.identity-explodes"] == "holds"
    assert verdicts["E3.identity-vanishes"] == "holds"
    assert verdicts["E3.identity-gradient"] == "holds"


def test_deep_linear_wrong_gains_fail(tmp_path, monkeypatch):
    # 1.4 I where the claim says 1.5 I, and n Var(W) = 1.44 where it says g = 1
    monkeypatch.setitem(deep_linear.IDENTITY, "1.5 I", (1.5, {"name": "identity", "gain": 1.4}))
    monkeypatch.setitem(deep_linear.GAINS, "g=1.0", (1.0, deep_linear._scaled(1.2)))
    verdicts = _run(deep_linear, tmp_path)
    assert verdicts["E3.identity-explodes"] == "fails"
    assert verdicts["E3.identity-vanishes"] == "holds"
    assert verdicts["E3.identity-gradient"] == "fails"
    assert verdicts["E3.random-factor"] == "fails"
    assert verdicts["E3.random-phases"] == "fails"


def test_depth_overflow_underflow_and_data(tmp_path):
    verdicts = _run(depth, tmp_path)
    assert verdicts["E4.standardized"] == "holds"
    assert verdicts["E4.naive-overflow"] == "holds"
    assert verdicts["E4.tiny-underflow"] == "holds"


def test_depth_wrong_variants_fail(tmp_path, monkeypatch):
    # each variant swapped for one that must break its claim; "xavier" gets std 2 / sqrt(n_in)
    doubled = {"name": "variance_scaling", "scale": 4.0, "mode": "fan_in",
               "distribution": "normal"}
    monkeypatch.setattr(depth, "LINEAR", {"naive": "lecun_normal", "tiny": "lecun_normal",
                                          "xavier": doubled})
    monkeypatch.setattr(depth, "RELU", {"xavier": "he_normal", "kaiming": "lecun_normal"})
    verdicts = _run(depth, tmp_path)
    assert verdicts["E4.standardized"] == "holds"
    for claim in ("naive-overflow", "tiny-underflow", "xavier-linear", "relu-xavier-halves",
                  "relu-kaiming"):
        assert verdicts[f"E4.{claim}"] == "fails", claim


def test_logistic_zero_and_random_init_agree(tmp_path):
    verdicts = _run(logistic, tmp_path)
    assert set(verdicts.values()) == {"holds"}


def test_logistic_short_training_fails(tmp_path, monkeypatch):
    # 20 epochs are far from convergence: the gradient is large and the two starts still differ
    monkeypatch.setattr(logistic, "EPOCHS", 20)
    verdicts = _run(logistic, tmp_path)
    assert verdicts["E6.finite-optimum"] == "fails"
    assert verdicts["E6.same-weights"] == "fails"
