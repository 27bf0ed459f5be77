"""Exchange routes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from services.common.errors import CommonProblem, NotFound, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.exchange import callbacks
from services.exchange.evidence import Evidence, read_bundle
from services.exchange.problems import DENIALS, ExchangeProblem
from services.exchange.schemas import (
    Accepted,
    BatchCreate,
    CallbackUrlSet,
    EvidenceBundlePublic,
    EvidenceCreate,
    QueryCreate,
    QueryResult,
)
from services.exchange.service import Exchange, get_query, query_view

# Printable ASCII only: the key is stored, and compared byte for byte on a retry.
IDEMPOTENCY_KEY = r"^[\x21-\x7e]+$"

ASYNC_DOC = (
    "With `mode: async` the answer is 202 at once, with `Location` of the query: read it there, "
    "or receive it at the callback URL (`callback_url`) your system registered."
)

ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": Accepted, "description": "mode async: accepted"}}
BATCH_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "mode async: each subject's query accepted (its id) or refused (its problem)"}
}

router = APIRouter(
    prefix="/v1/exchange",
    tags=["exchange"],
    responses=problem_responses(CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION),
)


@router.post(
    "/queries",
    response_model=QueryResult,
    summary="Query a provider for data about one subject",
    description=ASYNC_DOC,
    responses=ACCEPTED
    | problem_responses(
        *DENIALS,
        ExchangeProblem.IDEMPOTENCY_IN_PROGRESS,
        ExchangeProblem.IDEMPOTENCY_KEY_REUSED,
        ExchangeProblem.SUBJECT_NOT_FOUND,
        ExchangeProblem.PROVIDER_ERROR,
        ExchangeProblem.PROVIDER_TIMEOUT,
        ExchangeProblem.QUERY_INTERRUPTED,
        ExchangeProblem.ANSWER_PURGED,
        ExchangeProblem.CALLBACKS_UNAVAILABLE,
        CommonProblem.DATABASE_UNAVAILABLE,
    ),
)
async def create_query(
    body: QueryCreate,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY)] = None,
) -> Response:
    exchange: Exchange = request.app.state.exchange
    if body.mode == "async":
        return accepted(await exchange.submit(principal, body, idempotency_key))
    # The hot path answers with the body as built (no response_model round trip).
    return OrjsonResponse(await exchange.query(principal, body, idempotency_key))


def accepted(query_id: uuid.UUID) -> Response:
    location = f"/v1/exchange/queries/{query_id}"
    return OrjsonResponse(
        {"id": str(query_id), "mode": "async", "location": location}, status_code=202, headers={"Location": location}
    )


@router.post(
    "/queries:batch",
    summary="Query a provider about many subjects: one query per subject, an outcome per subject",
    description="Each subject is its own query (own id, audit record, quota count and Idempotency-Key "
    "`<key>#<index>`), tied by `batch_id`. Sync: 200 with every outcome; async: 202 with every query's id. "
    + ASYNC_DOC,
    responses=BATCH_ACCEPTED | problem_responses(ExchangeProblem.BATCH_TOO_LARGE, CommonProblem.DATABASE_UNAVAILABLE),
)
async def create_batch(
    body: BatchCreate,
    principal: CurrentPrincipal,
    request: Request,
    # Shorter than a single query's: each subject's key is this one with "#<index>" appended.
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=240, pattern=IDEMPOTENCY_KEY)] = None,
) -> Response:
    exchange: Exchange = request.app.state.exchange
    outcome = await exchange.batch(principal, body, idempotency_key)
    return OrjsonResponse(outcome, status_code=202 if body.mode == "async" else 200)


@router.put(
    "/callback-url",
    summary="Register the https URL the outcomes of this system's async queries are POSTed to",
    responses=problem_responses(ExchangeProblem.NOT_A_CONSUMER, ExchangeProblem.CALLBACK_URL_NOT_HTTPS),
)
async def put_callback_url(body: CallbackUrlSet, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    return OrjsonResponse(await callbacks.register_url(uow.session, principal, body.url))


@router.get(
    "/callback-url",
    summary="The callback URL this system registered",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_callback_url(principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    registered = await callbacks.registered_url(uow.session, principal)
    if registered is None:
        raise NotFound("callback-url", principal.client_id or principal.sub)
    return OrjsonResponse(registered)


@router.get(
    "/callback-keys",
    summary="The public keys (JWKS) callbacks are signed with (header Tongban-Signature)",
    responses=problem_responses(ExchangeProblem.CALLBACKS_UNAVAILABLE),
)
async def callback_keys(request: Request) -> Response:
    signer: callbacks.CallbackSigner | None = request.app.state.callback_signer
    if signer is None:
        raise ExchangeProblem.CALLBACKS_UNAVAILABLE.problem("This exchange has no key-encryption key: no callbacks.")
    return OrjsonResponse(signer.jwks(), headers={"Cache-Control": "max-age=300"})


@router.get(
    "/queries/{query_id}",
    summary="A query's outcome (only for the system that asked)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def read_query(query_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    return OrjsonResponse(query_view(await get_query(uow.session, principal, query_id)))


@router.post(
    "/evidence",
    response_model=EvidenceBundlePublic,
    summary="免提交: fetch every government-issued material of a service item about one subject",
    responses=problem_responses(
        ExchangeProblem.NOT_A_CONSUMER,
        ExchangeProblem.INVALID_SUBJECT,
        ExchangeProblem.UNKNOWN_SERVICE_ITEM,
        CommonProblem.DATABASE_UNAVAILABLE,
    ),
)
async def create_evidence_bundle(
    body: EvidenceCreate,
    principal: CurrentPrincipal,
    request: Request,
    # Each material's query gets "<key>:<material id>", so the key leaves room for the suffix.
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> EvidenceBundlePublic:
    evidence: Evidence = request.app.state.evidence
    return await evidence.bundle(principal, body, idempotency_key)


@router.get(
    "/evidence/{bundle_id}",
    response_model=EvidenceBundlePublic,
    summary="An evidence bundle (only for the system that asked)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def read_evidence_bundle(
    bundle_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> EvidenceBundlePublic:
    return await read_bundle(uow.session, principal, bundle_id)


@router.get(
    "/providers/{dept}/jwks",
    summary="A provider's answer-signing public keys (to verify an answer's SD-JWT)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def provider_jwks(dept: str, principal: CurrentPrincipal, request: Request) -> Response:
    """The JWKS the exchange verifies ``dept``'s answers with, for consumers to verify them too."""
    if not re.fullmatch(r"[0-9A-HJ-NPQRTUWXY]{18}", dept):
        raise NotFound("provider", dept)
    exchange: Exchange = request.app.state.exchange
    jwks = await exchange.provider_keys.jwks(dept)
    if not jwks.get("keys"):
        raise NotFound("provider", dept)
    return OrjsonResponse({"keys": jwks["keys"]})
