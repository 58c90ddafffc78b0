"""Idempotency-Key: requests are compared by their canonical body, not their bytes."""

from __future__ import annotations

from typing import Any

from app.http.middleware.idempotency import canonical_body, request_fingerprint


def _scope(path: str = "/api/v1/enrich", query: bytes = b"") -> Any:
    return {"method": "POST", "path": path, "query_string": query}


def test_json_spelled_differently_is_the_same_request() -> None:
    compact = b'{"cpf":"52998224725","email":"a@b.co"}'
    spaced = b'{ "email" : "a@b.co",\n  "cpf": "52998224725" }'
    assert canonical_body(compact) == canonical_body(spaced)
    assert request_fingerprint(_scope(), compact) == request_fingerprint(_scope(), spaced)


def test_other_parameters_are_another_request() -> None:
    assert request_fingerprint(_scope(), b'{"cpf":"52998224725"}') != request_fingerprint(
        _scope(), b'{"cpf":"11144477735"}'
    )
    assert request_fingerprint(_scope(), b'{"cpf":"1"}') != request_fingerprint(
        _scope("/api/v1/enrich/batch"), b'{"cpf":"1"}'
    )


def test_nested_objects_are_sorted_too() -> None:
    left = b'{"items":[{"phone":"1","cpf":"2"}]}'
    right = b'{"items": [ {"cpf": "2", "phone": "1"} ]}'
    assert canonical_body(left) == canonical_body(right)


def test_a_body_that_is_not_json_is_compared_byte_for_byte() -> None:
    assert canonical_body(b"not json") == b"not json"
    assert canonical_body(b"") == canonical_body(b"  ") == b""
