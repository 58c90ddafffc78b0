"""AES-GCM sealing of Redis values: confidentiality, binding to the key name, rotation."""

from __future__ import annotations

from infra.sealing import AeadEnvelope

OLD = ("k1", b"old-secret-0123456789")
NEW = ("k2", b"new-secret-0123456789")
PAYLOAD = b'{"cpf":"39053344705","email":"helena@example.com"}'


def test_sealed_value_hides_the_payload_and_opens_under_its_name() -> None:
    envelope = AeadEnvelope([NEW], purpose="idempotency")
    sealed = envelope.seal("c2s:idem:abc", PAYLOAD)
    assert b"39053344705" not in sealed
    assert b"helena" not in sealed
    assert sealed.startswith(b"k2.")
    assert envelope.open("c2s:idem:abc", sealed) == PAYLOAD
    assert envelope.seal("c2s:idem:abc", PAYLOAD) != sealed  # a fresh nonce each time


def test_a_value_copied_under_another_name_or_tampered_does_not_open() -> None:
    envelope = AeadEnvelope([NEW], purpose="idempotency")
    sealed = envelope.seal("c2s:idem:tenant-a", PAYLOAD)
    assert envelope.open("c2s:idem:tenant-b", sealed) is None
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert envelope.open("c2s:idem:tenant-a", flipped) is None
    assert envelope.open("c2s:idem:tenant-a", b"garbage") is None


def test_rotation_opens_old_values_until_the_old_key_is_removed() -> None:
    before = AeadEnvelope([OLD], purpose="lead_replay")
    during = AeadEnvelope([NEW, OLD], purpose="lead_replay")
    after = AeadEnvelope([NEW], purpose="lead_replay")
    sealed = before.seal("n", PAYLOAD)
    assert during.open("n", sealed) == PAYLOAD
    assert during.seal("n", PAYLOAD).startswith(b"k2.")
    assert after.open("n", sealed) is None


def test_purposes_derive_different_keys() -> None:
    sealed = AeadEnvelope([NEW], purpose="idempotency").seal("n", PAYLOAD)
    assert AeadEnvelope([NEW], purpose="lead_replay").open("n", sealed) is None
