"""No raw personal data or API key leaves the app through logs, metrics, spans or error bodies.

The real app (``create_app``) is driven with known synthetic values: a CPF with valid check
digits (a person the upstream sandbox knows, so the whole pipeline runs when the v1 routes are
served), a phone, an e-mail, a name and API keys. Everything the process emits is captured:

* structlog and stdlib logging output (``capfd`` at the file-descriptor level, plus ``caplog``);
* ``/metrics`` when served;
* every finished span, through an in-memory exporter behind the app's own scrubbing exporter
  (what an OTLP collector would receive);
* every error body (4xx/5xx), and every response header.

None of the raw values may appear, in its formatted or digits-only form. Successful bodies are
not checked: answering a customer's data to an authorised caller is the API's job.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar import get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import AsyncTestClient

from app.config import Secret
from app.main import create_app
from observability.logging import configure_logging
from observability.tracing import configure_tracing, flush_tracing, shutdown_tracing
from tests.support.factories import issue_key
from tests.support.sandbox import C2S_TOKEN, DIRETRIX_PASS, DIRETRIX_USER, PEOPLE, WORK_API_TOKEN

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.config import Settings

pytestmark = pytest.mark.integration


PERSON = PEOPLE.person(3)  # known to the sandbox (Work API dossier, Diretrix registry)
CPF = PERSON.cpf
PHONE = "+55 (11) 98765-4321"
EMAIL = "joaquina.piiteste@example.com"
NAME = "Joaquina Piiteste Quarentaedois"


def _cpf_variants(cpf: str) -> set[str]:
    digits = re.sub(r"\D", "", cpf)
    return {digits, f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"}


RAW_VALUES: dict[str, set[str]] = {
    "cpf": _cpf_variants(CPF),
    "phone": {"5511987654321", "11987654321", "(11) 98765-4321", "98765-4321", "987654321"},
    "email": {EMAIL, EMAIL.upper(), "joaquina.piiteste"},
    "name": {NAME, NAME.upper(), "Piiteste", "Quarentaedois"},
    # What the sandbox's dossier holds about the person: the app must not log it either.
    "dossier_name": {PERSON.name, PERSON.name.upper()},
}


def leaks(text: str, extra: dict[str, set[str]] | None = None) -> list[tuple[str, str]]:
    """``(kind, value)`` of every raw value found in ``text``."""
    found = []
    for kind, values in {**RAW_VALUES, **(extra or {})}.items():
        for value in values:
            if value and value in text:
                found.append((kind, value))
    return found


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, exporting to memory through the app's scrubbing exporter."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    with pytest.MonkeyPatch.context() as patch:
        # The test session disables the SDK globally (no collector); this module needs it.
        patch.delenv("OTEL_SDK_DISABLED", raising=False)
        shutdown_tracing()
        configure_tracing(exporter=exporter, schedule_delay_ms=50, environment="test")
        try:
            yield exporter
        finally:
            shutdown_tracing()


@post("/probe/explode", include_in_schema=False, status_code=200, sync_to_thread=False)
def probe_explode(data: JSONBody[dict[str, Any]]) -> None:
    # A bug that puts the request in an exception message: the 500 must not echo it.
    raise RuntimeError(f"cannot handle {data!r}")


@get("/probe/explode-query", include_in_schema=False, sync_to_thread=False)
def probe_explode_query(cpf: FromQuery[str]) -> None:
    raise ValueError("bad cpf " + cpf)


@post("/probe/item/{item:str}", include_in_schema=False, status_code=200, sync_to_thread=False)
def probe_item(item: FromPath[str]) -> None:
    return None


@pytest.fixture(scope="module")
def pii_settings(settings: Settings, sandbox_url: str) -> Settings:
    """The session settings, logging everything, with the upstreams at the sandbox."""
    return msgspec.structs.replace(
        settings,
        log_level="DEBUG",
        redis_key_prefix=f"{settings.redis_key_prefix}pii:",
        c2s_base_url=sandbox_url,
        c2s_token=Secret(C2S_TOKEN),
        diretrix_base_url=sandbox_url,
        diretrix_user=DIRETRIX_USER,
        diretrix_pass=Secret(DIRETRIX_PASS),
        work_api_base_url=sandbox_url,
        work_api_token=Secret(WORK_API_TOKEN),
    )


@pytest.fixture(scope="module")
async def pii_client(
    pii_settings: Settings, settings: Settings, spans: InMemorySpanExporter
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(pii_settings)
    app.register(probe_explode)
    app.register(probe_explode_query)
    app.register(probe_item)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        yield client
    # Back to the session's logging for the modules that run after this one.
    configure_logging(settings.log_level, settings.log_format)


@pytest.fixture(scope="module")
async def api_key(database_url: str) -> str:
    return (await issue_key(database_url, tenant="pii", scopes="read,enrich"))[0]


def _key_values(*keys: str) -> dict[str, set[str]]:
    return {"api_key": {part for key in keys for part in (key, key.split("_", 2)[-1])}}


async def _drive(client: AsyncTestClient[Litestar], key: str, unknown_key: str) -> list[Any]:
    """Every request shape carrying the raw values; returns the responses."""
    auth = {"Authorization": f"Bearer {key}"}
    wrong_cpf = CPF[:-1] + str((int(CPF[-1]) + 1) % 10)
    identifiers = {"cpf": CPF, "email": EMAIL, "phone": PHONE, "name": NAME}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/contributor/customer", {"params": {"cpf": CPF}}),
        ("GET", "/api/v1/contributor/customer", {"params": {"cpf": wrong_cpf}}),
        ("GET", "/api/v1/contributor/customer", {"params": {"email": EMAIL}}),
        ("GET", "/api/v1/contributor/customer", {"params": {"phone": PHONE}}),
        ("GET", "/api/v1/contributor/customer", {"params": {"name": NAME}}),
        ("POST", "/api/v1/enrich", {"json": identifiers}),
        ("POST", "/api/v1/enrich", {"json": {"cpf": wrong_cpf, "email": "not-an-email " + EMAIL}}),
        ("POST", "/api/v1/enrich", {"json": {**identifiers, "unexpected": CPF}}),
        ("POST", "/api/v1/enrich/batch", {"json": {"items": [identifiers, {"cpf": wrong_cpf}]}}),
        (
            "POST",
            "/api/v1/leads",
            {
                "json": {
                    "lead_id": "pii-lead-1",
                    "personal_info": {"name": NAME, "email": EMAIL, "cpf": CPF},
                    "contact_info": {"phones": [{"phone": PHONE}]},
                }
            },
        ),
        ("GET", "/api/v1/work/modules/all", {"params": {"documento": CPF}}),
        ("GET", "/api/v1/work/modules/cpf", {"params": {"documento": wrong_cpf}}),
        ("GET", f"/api/v1/customers/{uuid.uuid4()}", {}),
        (
            "POST",
            "/api/v1/enrich",
            {"content": f"cpf={CPF}", "headers": {"Content-Type": "text/plain"}},
        ),
        ("POST", "/probe/explode", {"json": identifiers}),
        ("GET", "/probe/explode-query", {"params": {"cpf": CPF}}),
    ]
    responses = []
    for method, path, kwargs in requests:
        headers = {**auth, **kwargs.pop("headers", {})}
        responses.append(await client.request(method, path, headers=headers, **kwargs))
    # Unauthenticated and badly authenticated requests carrying personal data.
    responses.append(await client.get("/api/v1/contributor/customer", params={"cpf": CPF}))
    responses.append(
        await client.post("/api/v1/enrich", json=identifiers, headers={"X-API-Key": unknown_key})
    )
    return responses


async def test_no_raw_personal_data_or_key_in_logs_metrics_spans_or_error_bodies(
    pii_client: AsyncTestClient[Litestar],
    api_key: str,
    spans: InMemorySpanExporter,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    unknown_key = "c2s_abcdefgh_" + "Zq9" * 15
    extra = _key_values(api_key, unknown_key)
    caplog.set_level("DEBUG")
    responses = await _drive(pii_client, api_key, unknown_key)

    # Error bodies and every response's headers.
    for response in responses:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        assert not leaks(str(response.headers), extra), where
        if response.status_code >= 400:
            assert not leaks(response.text, extra), (where, response.text)

    # Metrics.
    metrics = await pii_client.get("/metrics")
    if metrics.status_code == 200:
        assert "http_server_request_duration_seconds" in metrics.text
        assert not leaks(metrics.text, extra)

    # Logs: everything written to stdout/stderr and every stdlib record. The test client's own
    # request lines (logger "httpx") are not the app's and are left out.
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if '"logger": "httpx"' not in line]
    assert lines, "the app logged nothing: is logging captured?"
    found = [(leak, line) for line in lines for leak in leaks(line, extra)]
    assert not found, found[:5]
    records = [
        record.getMessage() + " " + str(record.__dict__.get("args"))
        for record in caplog.records
        if record.name != "httpx"
    ]
    found_records = [(leak, text) for text in records for leak in leaks(text, extra)]
    assert not found_records, found_records[:5]

    # Spans, as exported.
    flush_tracing()
    exported = spans.get_finished_spans()
    assert exported, "no span was exported: is tracing wired into the app?"
    for span in exported:
        text = " ".join(
            [
                span.name,
                str(dict(span.attributes or {})),
                str([(event.name, dict(event.attributes or {})) for event in span.events]),
                str(span.status.description or ""),
            ]
        )
        assert not leaks(text, extra), (span.name, text)


async def test_a_5xx_body_never_echoes_its_input(
    pii_client: AsyncTestClient[Litestar], api_key: str
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    body = {"cpf": CPF, "email": EMAIL, "phone": PHONE, "name": NAME}
    response = await pii_client.post("/probe/explode", json=body, headers=auth)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert not leaks(response.text)
    assert "cannot handle" not in response.text  # the exception's text is never answered
    query = await pii_client.get("/probe/explode-query", params={"cpf": CPF}, headers=auth)
    assert query.status_code == 500
    assert not leaks(query.text)


async def test_edge_errors_do_not_echo_personal_data_in_the_path(
    pii_client: AsyncTestClient[Litestar],
) -> None:
    digits = re.sub(r"\D", "", CPF)
    for path in (f"/probe/item/{digits}", f"/probe/item/{EMAIL}"):
        # 401 (no key, unknown key) and 415 are answered by the auth and security middleware.
        missing = await pii_client.post(path, content=b"{}")
        unknown = await pii_client.post(
            path, content=b"{}", headers={"X-API-Key": "c2s_abcdefgh_" + "k" * 43}
        )
        for response in (missing, unknown):
            assert response.status_code == 401
            assert not leaks(response.text), response.text


async def test_not_found_errors_do_not_echo_personal_data_in_the_path(
    pii_client: AsyncTestClient[Litestar], api_key: str
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    digits = re.sub(r"\D", "", CPF)
    for path in (f"/no/such/{digits}", f"/api/v1/lookup/{EMAIL}"):
        response = await pii_client.get(path, headers=auth)
        assert response.status_code == 404
        assert not leaks(response.text), response.text
