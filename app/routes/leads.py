"""The lead flows: ``GET /leads/process`` (Make.com) and ``POST /c2s/enrich/{lead_id}``."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath, QueryParameter

from app.problems import problem_responses
from app.routes import API_KEY_SECURITY, EnricherDep
from domain.errors import InvalidInput
from domain.pipeline import DirectResult, ProcessResult

__all__ = ["LeadController"]

# C2S lead ids are 32 hex characters; anything URL-safe of bounded length is accepted, nothing
# that could change the upstream URL's path.
_LEAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _lead_id(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise InvalidInput("id", "Missing 'id' parameter")
    if not _LEAD_ID.match(raw):
        raise InvalidInput("id", "'id' must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return raw


class LeadController(Controller):
    """Enrich a C2S lead and post the result back to it."""

    path = "/api/v1"
    tags = ["leads"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        "/leads/process",
        operation_id="processLead",
        summary="Enrich a C2S lead (deduplicated); always 200, `success` tells the outcome",
        responses=problem_responses(400, 401, 429, 503),
    )
    async def process(
        self,
        enricher: EnricherDep,
        lead_id: Annotated[
            str | None,
            QueryParameter(name="id", required=False, max_length=64, description="C2S lead id"),
        ] = None,
    ) -> ProcessResult:
        return await enricher.process_lead(_lead_id(lead_id))

    @post(
        "/c2s/enrich/{lead_id:str}",
        operation_id="enrichLead",
        summary="Enrich a C2S lead now (no dedup, fresh data); failures are HTTP errors",
        status_code=200,
        responses=problem_responses(400, 401, 404, 429, 502, 503),
    )
    async def enrich(self, enricher: EnricherDep, lead_id: FromPath[str]) -> DirectResult:
        return await enricher.enrich_lead(_lead_id(lead_id))
