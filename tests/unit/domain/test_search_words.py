"""The words of a searched name every hit must contain (domain.search.name_words)."""

from __future__ import annotations

import pytest

from domain.search import MAX_NAME_WORDS, name_words


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("LUCIANA GOMES", ("LUCIANA", "GOMES")),
        ("MARIA DA SILVA", ("MARIA", "SILVA")),  # particles rank, they are not required
        ("ANA ANA", ("ANA",)),
        ("JO", ("JO",)),  # no word of 3+ characters: the whole name
        ("DA DE", ("DA DE",)),
        (
            "JOSE CARLOS ALBUQUERQUE MARANHAO PEREIRA NETO",
            ("CARLOS", "ALBUQUERQUE", "MARANHAO", "PEREIRA"),  # the longest, in order
        ),
    ],
)
def test_the_words_a_hit_must_contain(name: str, words: tuple[str, ...]) -> None:
    assert name_words(name) == words
    assert len(name_words(name)) <= MAX_NAME_WORDS
