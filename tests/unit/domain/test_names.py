"""Name matching (docs/contract.md §6.4): one test per rule, in rule order."""

from __future__ import annotations

import pytest

from domain.names import levenshtein, match_names, normalize_name, similarity


def test_normalize_upper_cases_strips_accents_and_collapses_spaces() -> None:
    assert normalize_name("  José   da  Conceição ") == "JOSE DA CONCEICAO"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ma. Souza", "MARIA SOUZA"),
        ("J. Pereira", "JOSE PEREIRA"),
        ("Fco. Alves", "FRANCISCO ALVES"),
        ("Dra. Lima", "DOUTORA LIMA"),
        ("Sta. Rita", "SANTA RITA"),
    ],
)
def test_normalize_expands_common_abbreviations(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize("suffix", ["JUNIOR", "JR", "Jr.", "FILHO", "NETO", "SOBRINHO", "II"])
def test_normalize_drops_generational_suffixes(suffix: str) -> None:
    assert normalize_name(f"Carlos Mendes {suffix}") == "CARLOS MENDES"


def test_normalize_keeps_abbreviation_letters_inside_words() -> None:
    assert normalize_name("Marcos") == "MARCOS"


def test_levenshtein_counts_edits() -> None:
    assert levenshtein("KITTEN", "SITTING") == 3
    assert levenshtein("", "ABC") == 3
    assert levenshtein("ABC", "ABC") == 0


def test_similarity_is_one_minus_distance_over_longest() -> None:
    assert similarity("SOUZA", "SOUSA") == pytest.approx(0.8)
    assert similarity("", "") == 1.0
    assert similarity("A", "") == 0.0


def test_rule_exact_match_after_normalization() -> None:
    result = match_names("José da Silva", "JOSE DA SILVA")
    assert (result.method, result.score, result.matched) == ("exact", 1.0, True)


def test_rule_exact_ignores_generational_suffix() -> None:
    assert match_names("Carlos Mendes Filho", "CARLOS MENDES").method == "exact"


def test_rule_fuzzy_full_when_whole_name_similarity_reaches_threshold() -> None:
    result = match_names("Marcos Oliveira", "MARCIO OLIVEIRA")
    assert result.method == "fuzzy-full"
    assert result.score == pytest.approx(1 - 2 / 15)
    assert result.matched


def test_rule_first_name_only_when_lead_gave_one_name() -> None:
    result = match_names("Maria", "MARIA APARECIDA SILVA")
    assert (result.method, result.score, result.matched) == ("first-name-only", 0.85, True)


def test_rule_first_name_only_needs_three_letters() -> None:
    assert match_names("Jo", "JO APARECIDA SILVA").method != "first-name-only"


def test_rule_first_last_fuzzy_when_first_equal_and_last_similar() -> None:
    result = match_names("Joao Souza", "JOAO CARLOS DE SOUSA")
    assert result.method == "first-last-fuzzy"
    assert result.score == pytest.approx((1 + 0.8) / 2)


def test_rule_last_first_fuzzy_when_last_equal_and_first_similar() -> None:
    result = match_names("Marcos Oliveira", "MARCIO AUGUSTO PEREIRA OLIVEIRA")
    assert result.method == "last-first-fuzzy"
    assert result.score == pytest.approx((1 + 4 / 6) / 2)


def test_rule_contains_scores_by_length_ratio() -> None:
    result = match_names("Silva Santos", "MARIA APARECIDA SILVA SANTOS")
    assert result.method == "contains"
    assert result.score == pytest.approx(0.7 + 0.3 * 12 / 28)


def test_rule_abbreviation_when_last_name_is_an_initial() -> None:
    result = match_names("Maria S", "MARIA APARECIDA SILVA")
    assert (result.method, result.score) == ("abbreviation", 0.8)


def test_rule_initials_when_lead_is_two_or_three_letters() -> None:
    result = match_names("JP", "JOAO PAULO SILVA")
    assert (result.method, result.score) == ("initials", 0.85)


def test_rule_initials_last_name() -> None:
    result = match_names("JP Demasi", "JOAO PAULO BENEVIDES DEMASI")
    assert (result.method, result.score) == ("initials-last-name", 0.9)


def test_rule_none_reports_full_similarity_without_match() -> None:
    result = match_names("Ana", "CARLOS")
    assert result.method == "none"
    assert not result.matched
    assert result.score == pytest.approx(similarity("ANA", "CARLOS"))


def test_higher_threshold_disables_fuzzy_full() -> None:
    assert match_names("Marcos Oliveira", "MARCIO OLIVEIRA", threshold=0.95).method != (
        "fuzzy-full"
    )


@pytest.mark.parametrize(("lead", "candidate"), [("", "MARIA"), ("Junior", "JUNIOR"), ("", "")])
def test_names_that_normalize_to_nothing_never_match(lead: str, candidate: str) -> None:
    result = match_names(lead, candidate)
    assert (result.method, result.score, result.matched) == ("none", 0.0, False)
