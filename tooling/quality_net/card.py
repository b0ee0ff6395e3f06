"""MODEL_CARD.md keeps measured numbers between `<!-- name:begin -->` / `<!-- name:end -->` markers that the
training and evaluation scripts rewrite, so the card never drifts from the committed weights."""

from pathlib import Path


def write_card_section(card: Path, name: str, text: str) -> bool:
    """Replace the marked section `name` of `card`; False (and nothing written) when the card or markers are absent."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not card.is_file():
        return False
    content = card.read_text(encoding="utf-8")
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    card.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}", encoding="utf-8")
    return True
