"""The cards described from their definitions: ``docs/cards.md`` and ``initlab list --cards``
are this text, so the description cannot drift from the code (a test regenerates it)."""

from __future__ import annotations

import dataclasses
from typing import Any

from initlab.experiments import all_cards
from initlab.experiments.card import SIZES, Card


def _init(spec: Any) -> str:
    if isinstance(spec, dict):
        return spec["name"] + "(" + ", ".join(f"{k}={v}" for k, v in spec.items()
                                              if k != "name") + ")"
    return str(spec)


def _size(card: Card[Any], size: str) -> str:
    base = card.sizes["default"]
    cfg = card.sizes[size]  # type: ignore[index]
    if size == "default":
        fields = dataclasses.asdict(cfg)
    else:
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                  if getattr(cfg, f.name) != getattr(base, f.name)}
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "as default"


def card_markdown(card: Card[Any]) -> list[str]:
    lines = [f"## {card.title}", "", f"`initlab run {card.name}`", "", f"> {card.summary}", "",
             card.why, "", f"Data: {card.data or 'see the card'}.", "", "Variants:", ""]
    for name, variant in card.variants.items():
        extra = (" then a scheme" if variant.scheme else "") + (" (context: fewer seeds)"
                                                                 if variant.context else "")
        lines.append(f"- `{name}`: {_init(variant.init)}{extra}")
    lines += ["", "Sizes:", ""]
    lines += [f"- {size}: {_size(card, size)}" for size in SIZES]
    lines += ["", "Claims:", ""]
    for claim in card.claims:
        lines.append(f"- **{claim.id}**: {claim.text}. The source: {claim.printed}.")
    control = card.control
    swaps = [f"`{k}` -> {_init(v.init)}" for k, v in control.variants.items()]
    swaps += [f"{k}={v}" for k, v in control.config.items()]
    lines += ["", f"Negative control: {', '.join(swaps) or 'none'}; must fail: "
                  f"{', '.join(control.flips) or 'none'}. {control.why}".rstrip(), ""]
    return lines


def markdown() -> str:
    """The whole catalogue, as docs/cards.md holds it."""
    lines = ["# The experiment cards", "",
             "Generated from the card definitions in `src/initlab/experiments/` by "
             "`initlab list --cards --markdown > docs/cards.md`; a test checks it is current.",
             ""]
    for card in all_cards():
        lines += card_markdown(card)
    return "\n".join(lines).rstrip() + "\n"
