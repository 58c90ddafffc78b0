"""The lead flows: ``GET /leads/process`` (Make.com) and ``POST /c2s/enrich/{lead_id}``."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import PathParameter, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, EnricherDep
from domain.pipeline import DirectResult, ProcessResult

__all__ = ["LeadController"]

# C2S lead ids are 32 hex characters; anything URL-safe of bounded length is accepted, nothing
# that could change the upstream URL's path.
LEAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_LEAD_ID_DOC = "C2S lead id (32 hex characters in C2S; 1-64 of A-Z a-z 0-9 _ - accepted)"


class LeadController(Controller):
    """Enrich a C2S lead and post the result back to it."""

    path = "/api/v1"
    tags = ["leads"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        "/leads/process",
        operation_id="processLead",
        summary="Enrich a C2S lead (deduplicated); always 200, `success` tells the outcome",
        responses=problem_responses(400, 401, 403, 429, 503),
        opt={"scope": "enrich"},
    )
    async def process(
        self,
        enricher: EnricherDep,
        lead_id: Annotated[
            str, QueryParameter(name="id", pattern=LEAD_ID_PATTERN, description=_LEAD_ID_DOC)
        ],
        min_likelihood: Annotated[
            float | None,
            QueryParameter(
                ge=0,
                le=1,
                schema_extra={"minimum": 0},  # Litestar drops a bound of 0 from the document
                required=False,
                description=(
                    "0..1: a CPF resolved with a lower match score is neither enriched nor "
                    "messaged (`matches[].match.matched: false`, `reason`); none left: "
                    "`success: false`, `reason: below_min_likelihood`. Default MIN_LIKELIHOOD"
                ),
            ),
        ] = None,
    ) -> ProcessResult:
        return await enricher.process_lead(lead_id, min_likelihood=min_likelihood)

    @post(
        "/c2s/enrich/{lead_id:str}",
        operation_id="enrichLead",
        summary="Enrich a C2S lead now (no dedup, fresh data); failures are HTTP errors",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 429, 451, 502, 503),
    )
    async def enrich(
        self,
        enricher: EnricherDep,
        lead_id: Annotated[str, PathParameter(pattern=LEAD_ID_PATTERN, description=_LEAD_ID_DOC)],
    ) -> DirectResult:
        return await enricher.enrich_lead(lead_id)
