"""Data-subject rights (LGPD art. 18): ``GET`` and ``DELETE /api/v1/subjects/{cpf}``, ``dpo`` scope.

The export answers everything stored about the person (``domain.subjects.SubjectExport``); the
erasure removes it from PostgreSQL in one transaction and from Redis, leaves a tombstone, and
answers counts only. Both are recorded in the audit trail. The ``dpo`` scope is granted by
itself only (an ``admin`` key does not have it). docs/security.md, "LGPD", walks through a
person's request.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get
from litestar.params import PathParameter, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, SubjectRightsDep
from domain.subjects import ErasureResult, SubjectExport

__all__ = ["SubjectController"]

Cpf = Annotated[
    str,
    PathParameter(
        max_length=32,
        description="The person's CPF (11 digits, formatted or not); never echoed in errors",
    ),
]

_EXPORT_DOC = (
    "Everything stored about the person: party, person fields, contacts, addresses, the current "
    "enrichment and its history (each with its source, time and the raw upstream payload), the "
    "C2S lead messages and webhook events that reference them, and the audit records about them "
    "(who read or bought their data, when). 404 when nothing is stored; for a person erased on "
    "request, the 404 says when. Recorded in the audit trail (`subject_export`)."
)
_ERASE_DOC = (
    "Erase the person: every stored record (PostgreSQL, one transaction) and cache entry "
    "(Redis, every process's memory), leaving a tombstone. For ERASURE_HOLD_DAYS no paid fetch "
    "buys their data again (451 `subject-erased`) unless a lookup carries `consent=true`. "
    "Answers counts only. A second erasure is 404 with the first one's date. Recorded in the "
    "audit trail (`subject_erasure`)."
)


class SubjectController(Controller):
    """A person's right to access and erase their data."""

    path = "/api/v1/subjects"
    tags = ["subjects"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY
    opt = {"scope": "dpo"}  # noqa: RUF012 - Litestar reads class attributes

    @get(
        "/{cpf:str}",
        operation_id="exportSubject",
        summary="Everything stored about a person (LGPD art. 18 access)",
        description=_EXPORT_DOC,
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def export(self, subject_rights: SubjectRightsDep, cpf: Cpf) -> SubjectExport:
        return await subject_rights.export(cpf)

    @delete(
        "/{cpf:str}",
        operation_id="eraseSubject",
        summary="Erase a person's data (LGPD art. 18 erasure) and hold re-purchase",
        description=_ERASE_DOC,
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def erase(
        self,
        subject_rights: SubjectRightsDep,
        cpf: Cpf,
        consent_withdrawn: Annotated[
            bool,
            QueryParameter(description="The person withdrew their consent (recorded as reason)"),
        ] = False,
    ) -> ErasureResult:
        return await subject_rights.erase(cpf, consent_withdrawn=consent_withdrawn)
