"""PII masking and the last-line-of-defence scrubber (observability/pii.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability.pii import mask_pii, scrub_text

DIGITS = "0123456789"
# Surrounding text that cannot glue onto a number or an address: no digits, no characters
# allowed in e-mail addresses, so each embedded value stays a separate token.
SAFE_TEXT = st.text(alphabet=st.sampled_from(' ,;:()[]<>|"\n\tçãéABCxyz_-/'), max_size=30).map(
    lambda s: s.strip("-_/xyzABCçãé")
)


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=n, max_size=n)


CPFS = _digits(11)
FORMATTED_CPFS = CPFS.map(lambda d: f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}")
DDD = st.integers(min_value=11, max_value=99).map(str)
MOBILES = st.builds(lambda ddd, rest: f"{ddd}9{rest}", DDD, _digits(8))
LANDLINES = st.builds(
    lambda ddd, first, rest: f"{ddd}{first}{rest}", DDD, st.sampled_from("2345"), _digits(7)
)


@st.composite
def phones(draw: st.DrawFn) -> str:
    """Brazilian numbers in the spellings people and systems use."""
    national = draw(st.one_of(MOBILES, LANDLINES))
    ddd, local = national[:2], national[2:]
    head, tail = local[:-4], local[-4:]
    return draw(
        st.sampled_from(
            [
                national,
                f"55{national}",
                f"+55{national}",
                f"+55 {ddd} {head}-{tail}",
                f"({ddd}) {head}-{tail}",
                f"({ddd}){head}{tail}",
                f"{ddd} {head} {tail}",
                f"{ddd}-{head}-{tail}",
                f"+55 ({ddd}) {head}-{tail}",
            ]
        )
    )


@st.composite
def emails(draw: st.DrawFn) -> str:
    """RFC-valid addresses from hypothesis, plus Brazilian-looking ones."""
    return draw(
        st.one_of(
            st.emails(),
            st.builds(
                lambda user, host, tld: f"{user}@{host}.{tld}",
                st.from_regex(r"[a-z][a-z0-9._+-]{0,15}[a-z0-9]", fullmatch=True),
                st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
                st.sampled_from(["com", "com.br", "org.br", "net", "io"]),
            ),
        )
    )


def _embedded(prefix: str, value: str, suffix: str) -> str:
    return f"{prefix} {value} {suffix}"


@given(prefix=SAFE_TEXT, cpf=st.one_of(CPFS, FORMATTED_CPFS), suffix=SAFE_TEXT)
def test_any_cpf_embedded_in_text_is_scrubbed(prefix: str, cpf: str, suffix: str) -> None:
    out = scrub_text(_embedded(prefix, cpf, suffix))
    assert cpf not in out
    assert "".join(ch for ch in cpf if ch.isdigit())[:9] not in out.replace(".", "")


@given(prefix=SAFE_TEXT, phone=phones(), suffix=SAFE_TEXT)
def test_any_brazilian_phone_embedded_in_text_is_scrubbed(
    prefix: str, phone: str, suffix: str
) -> None:
    out = scrub_text(_embedded(prefix, phone, suffix))
    assert phone not in out
    digits = "".join(ch for ch in phone if ch.isdigit())
    # At most the last two digits survive anywhere in the output.
    assert digits[-8:] not in "".join(ch for ch in out if ch.isdigit())


@given(prefix=SAFE_TEXT, email=emails(), suffix=SAFE_TEXT)
def test_any_email_embedded_in_text_is_scrubbed(prefix: str, email: str, suffix: str) -> None:
    out = scrub_text(_embedded(prefix, email, suffix))
    assert email not in out
    local = email.rpartition("@")[0]
    # (a local part made of stars is indistinguishable from the mask's own stars)
    assert f"{local}@" not in out or set(local) <= {"*"}


@given(text=st.text(max_size=80))
def test_scrubbing_is_idempotent(text: str) -> None:
    once = scrub_text(text)
    assert scrub_text(once) == once


@given(text=st.text(alphabet=st.characters(blacklist_characters="0123456789@=Bb"), max_size=60))
def test_text_without_digits_or_addresses_is_left_alone(text: str) -> None:
    assert scrub_text(text) is text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.J9.x-y_z", "Authorization: Bearer ***"),
        ("GET /api?token=s3cr3t&modulo=cpf", "GET /api?token=***&modulo=cpf"),
        (
            "access_token=abc123;api_key=k-42 password=hunter2",
            "access_token=***;api_key=*** password=***",
        ),
        ("cpf 123.456.789-09", "cpf ***.***.***-09"),
        ("consulta=12345678909", "consulta=*********09"),
        ("ligar para (11) 98765-4321", "ligar para *********21"),
        ("joao.silva@exemplo.com.br", "j***@e***.br"),
    ],
)
def test_scrubber_masks_known_shapes(raw: str, expected: str) -> None:
    assert scrub_text(raw) == expected


@pytest.mark.parametrize(
    "safe",
    [
        "4bf92f3577b34da6a3ce929d0e0e4736",  # a trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a traceparent
        "550e8400-e29b-41d4-a716-446655440000",  # a UUID
        "GET /api/v1/customers/{id:uuid}",
        "2026-11-26T19:45:02.123456Z",
        "duration 123.45 ms, status 503",
        "12345678000195",  # a CNPJ: a company's public number, 14 digits
        "127.0.0.1:8080",
    ],
)
def test_scrubber_leaves_ids_routes_and_timestamps_alone(safe: str) -> None:
    assert scrub_text(safe) == safe


def test_a_trace_id_full_of_digits_survives() -> None:
    # 32 hex characters can hold long digit runs; they must not be taken for phone numbers.
    trace_id = "a1234567890123b4567890123456789c"
    assert scrub_text(f"trace {trace_id}") == f"trace {trace_id}"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("123.456.789-09", "cpf", "***.***.***-09"),
        ("12345678909", "cpf", "***.***.***-09"),
        ("+55 (11) 98765-4321", "phone", "***********21"),
        ("maria.souza@dominio.com", "email", "m***@d***.com"),
        ("Maria da Silva", "name", "M*** d*** S***"),
        ("c2s_live_0123456789abcdef", "api_key", "****cdef"),
        ("short", "api_key", "****"),
        ("anything", "secret", "***"),
        ("", "cpf", ""),
        (None, "email", ""),
    ],
)
def test_mask_pii_keeps_only_a_hint(value: str | None, kind: str, expected: str) -> None:
    assert mask_pii(value, kind) == expected  # type: ignore[arg-type]  # kinds come from the table


@given(cpf=CPFS, email=emails(), phone=phones())
def test_masks_are_stable_under_scrubbing(cpf: str, email: str, phone: str) -> None:
    for masked in (mask_pii(cpf, "cpf"), mask_pii(email, "email"), mask_pii(phone, "phone")):
        assert scrub_text(masked) == masked


def test_an_email_in_a_url_is_masked_without_losing_host_port_and_path() -> None:
    # url.full of a Diretrix lookup used to become "http://127.0.0.1:1***@e***.com".
    url = "http://127.0.0.1:18099/Consultas/Pessoa/Email/ana.souza@exemplo.com"
    scrubbed = scrub_text(url)
    assert scrubbed.startswith("http://127.0.0.1:18099/Consultas/Pessoa/Email/"), scrubbed
    assert "ana.souza@exemplo.com" not in scrubbed
    assert "@" in scrubbed  # still recognisably an e-mail, masked
    assert scrub_text("write to ana.souza@exemplo.com") != "write to ana.souza@exemplo.com"
