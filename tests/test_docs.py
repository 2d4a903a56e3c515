"""The docs cannot drift: docs/cards.md is what the card definitions generate, and nothing
in the repository refers to a file it does not contain."""

import re
from pathlib import Path

from initlab.experiments import catalog

ROOT = Path(__file__).resolve().parents[1]


def test_docs_cards_md_is_generated_from_the_cards():
    assert (ROOT / "docs" / "cards.md").read_text() == catalog.markdown(), \
        "regenerate it: initlab list --cards --markdown > docs/cards.md"


def test_every_card_and_claim_is_in_the_catalogue():
    from initlab import experiments

    text = catalog.markdown()
    for card in experiments.all_cards():
        assert f"`initlab run {card.name}`" in text
        assert all(f"**{claim.id}**" in text for claim in card.claims)


def test_no_reference_to_a_markdown_file_the_repository_lacks():
    files = [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.md"),
             *ROOT.glob("src/initlab/**/*.py"), *ROOT.glob("src/initlab/**/*.j2")]
    missing = []
    for path in files:
        for name in set(re.findall(r"\b([\w./-]+\.md)\b", path.read_text())):
            here = [path.parent / name, ROOT / name, ROOT / "docs" / Path(name).name]
            if name not in ("report.md",) and not any(p.is_file() for p in here):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing
