"""The conformance suite of the cards: every card, run by the framework at its tiny size,
passes the same checks, and its declared negative control flips the claims it names (so a
claim that could never fail would be caught here)."""

from __future__ import annotations

import json

import pytest

from initlab import experiments
from initlab.experiments import runner
from initlab.experiments.card import SIZES, Card

CARDS = [c for c in experiments.all_cards() if isinstance(c, Card)]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Each card once at tiny size, normal and under its control: (folder, result) pairs."""
    cache: dict = {}

    def get(card: Card, control: bool):
        if (card.name, control) not in cache:
            out = tmp_path_factory.mktemp(f"{card.name}-{'control' if control else 'normal'}")
            folder, (result,) = runner.run_cards([card], out=out, size="tiny", control=control)
            cache[card.name, control] = folder, result
        return cache[card.name, control]
    return get


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_a_card_declares_what_the_framework_needs(card):
    assert card.measure_fn is not None and card.claims
    ids = [c.id for c in card.claims]
    assert len(ids) == len(set(ids)), "claim ids are unique"
    assert set(card.sizes) == set(SIZES)
    assert card.sizes["tiny"].seeds <= card.sizes["default"].seeds <= card.sizes["full"].seeds
    assert set(card.control.flips) <= set(ids), "the control flips claims of the card"
    assert set(card.control.variants) <= set(card.variants)
    assert card.figures and card.tables and card.title and card.summary and card.why


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_a_card_runs_and_records_its_seeds(card, tiny_runs):
    folder, result = tiny_runs(card, False)
    payload = json.loads((folder / "results.json").read_text())
    (entry,) = payload["cards"]
    assert [c["id"] for c in entry["claims"]] == [c.id for c in card.claims]
    seeds = card.sizes["tiny"].seeds
    for claim in entry["claims"]:
        assert claim["verdict"] in ("holds", "fails")
        assert claim["headline"] and claim["measured"] and claim["source_printed"]
        assert claim["seeds"] and set(claim["seeds"]) <= set(range(seeds))
        assert claim["replicas"] >= len(claim["seeds"])
    assert all((folder / f).is_file() for f in entry["figures"])
    assert len(entry["figures"]) == len(card.figures)
    assert {p.name for p in (folder / "tables").glob("*.csv")} == {
        f"{card.name}-{name}.csv" for name in card.tables}


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_the_negative_control_flips_its_claims(card, tiny_runs):
    _, normal = tiny_runs(card, False)
    _, control = tiny_runs(card, True)
    before = {c.id: c.verdict for c in normal.claims}
    after = {c.id: c.verdict for c in control.claims}
    for claim in card.control.flips:
        assert before[claim] == "holds", f"{claim} must hold before the control"
        assert after[claim] == "fails", f"{claim} must fail under the control"


def test_seeds_beyond_a_cards_maximum_are_refused(tmp_path):
    card = next(c for c in CARDS)
    limited = Card("limited", title="t", claim="c", why="w", sizes=card.sizes,
                   variants=card.variants, control=card.control, max_seeds=3)
    with pytest.raises(ValueError, match="at most 3 seeds; got seeds=4"):
        runner.run_cards([limited], seeds=4, out=tmp_path)
    assert not list(tmp_path.iterdir()), "refused before any folder is written"


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_a_card_runs_with_one_seed(card, tmp_path):
    _, (result,) = runner.run_cards([card], seeds=1, out=tmp_path, size="tiny")
    for claim in result.claims:
        assert claim.verdict in ("holds", "fails") and claim.seeds == [0], claim


def test_a_cards_warnings_go_into_its_notes_not_the_console(tmp_path, recwarn):
    import warnings

    from initlab.experiments.card import Config, Control, Outcome, Variant, sizes

    card = Card("warns", title="t", claim="c", why="w", sizes=sizes(Config(seeds=1)),
                variants={"v": Variant("zeros")}, control=Control(()))

    @card.measure
    def measure(run):
        warnings.warn("replica 0 diverged at epoch 3", RuntimeWarning, stacklevel=1)
        warnings.warn("replica 0 diverged at epoch 3", RuntimeWarning, stacklevel=1)  # once
        return 1

    card.claim("w.0", "a claim", printed="p")(lambda m: Outcome(True, "h"))
    _, (result,) = runner.run_cards([card], out=tmp_path)
    assert result.notes == ["Warning while measuring: RuntimeWarning: replica 0 diverged at "
                            "epoch 3"]
    assert not [w for w in recwarn if "diverged" in str(w.message)]


def test_workers_start_the_cards_the_last_runs_timed_longest_first(tmp_path):
    cards = [experiments.get(name) for name in ("logistic", "symmetry", "lsuv", "moons")]
    assert runner.schedule(cards, tmp_path, "default") == cards  # nothing timed: their order

    def past(name, size, seconds, not_run=()):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"size": size}))
        (folder / "results.json").write_text(json.dumps({"cards": [
            {"name": card, "seconds": s,
             "claims": [{"verdict": "not run" if card in not_run else "holds"}]}
            for card, s in seconds.items()]}))

    past("run-20260101-000000", "default", {"logistic": 1.0, "symmetry": 9.0, "lsuv": 5.0})
    past("run-20260102-000000", "default", {"logistic": 3.0, "lsuv": 2.0},
         not_run=("lsuv",))  # the newest timing wins, but not a card that did not run
    past("run-20260103-000000", "tiny", {"logistic": 50.0})  # another size: not read
    (tmp_path / "run-20260104-000000").mkdir()  # a run still being written
    order = [c.name for c in runner.schedule(cards, tmp_path, "default")]
    assert order == ["moons", "symmetry", "lsuv", "logistic"]  # moons: never timed, first


def test_cards_in_worker_processes_give_what_one_process_gives(tmp_path):
    """run_cards(jobs=2): the same claims, headlines and tables, in the cards' order, from
    worker processes (a fork server's, not forks of the test process)."""
    cards = [experiments.get(name) for name in ("logistic", "symmetry", "lsuv")]
    seen = []
    _, serial = runner.run_cards(cards, out=tmp_path / "one", size="tiny")
    _, parallel = runner.run_cards(cards, out=tmp_path / "two", size="tiny", jobs=2,
                                   on_card=lambda card: seen.append(card.name) or (lambda f: None))
    assert [r.name for r in parallel] == [c.name for c in cards]
    assert sorted(seen) == sorted(c.name for c in cards)
    for a, b in zip(serial, parallel, strict=True):
        assert [(c.id, c.verdict, c.headline) for c in a.claims] == \
            [(c.id, c.verdict, c.headline) for c in b.claims]
        assert json.dumps(a.tables, sort_keys=True) == json.dumps(b.tables, sort_keys=True)
