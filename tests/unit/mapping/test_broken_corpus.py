"""Every broken mapping file of the corpus yields exactly the expected ``file:line:col`` lines.

Each ``tests/fixtures/mappings/broken/NN_name.yaml`` starts with a comment saying what is
wrong; ``NN_name.expected`` next to it holds the exact problem lines, in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.errors import MappingError
from connector.mapping.load import load_mapping, parse_mapping

CORPUS = Path(__file__).parents[2] / "fixtures" / "mappings" / "broken"
FILES = sorted(CORPUS.glob("*.yaml"))


def test_the_corpus_is_large_and_paired() -> None:
    assert len(FILES) >= 30
    for path in FILES:
        assert path.with_suffix(".expected").is_file(), f"{path.name} has no .expected file"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_file_reports_exactly_the_expected_problems(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    with pytest.raises(MappingError) as caught:
        parse_mapping(path.read_text(encoding="utf-8"), path.name)
    assert caught.value.problems == expected


@pytest.mark.parametrize("path", FILES[:3] + FILES[-3:], ids=lambda p: p.stem)
def test_the_message_names_the_file_and_every_problem(path: Path) -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    for problem in caught.value.problems:
        assert problem.startswith(f"{path}:")
        assert problem.split(":", 1)[1] in caught.value.message


def test_a_fixed_file_is_valid() -> None:
    """The corpus' base text is valid: each file is broken only by what its comment says."""
    text = (CORPUS / "39_many_problems_at_once.yaml").read_text(encoding="utf-8")
    fixed = (
        text.replace("op: bigger", "op: gt")
        .replace("Qualifed", "Qualified")
        .replace("{feild: Name}", "{field: Name}")
    )
    mapping = parse_mapping(fixed, "fixed.yaml")
    assert mapping.select is not None
