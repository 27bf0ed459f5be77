"""Change feed route (库表共享): ``GET /v1/exchange/feeds/{resource}`` (rules in exchange/feeds.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.common.errors import CommonProblem, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal
from services.exchange.feeds import CURSOR_MAX, Feeds
from services.exchange.problems import ExchangeProblem

router = APIRouter(
    prefix="/v1/exchange",
    tags=["exchange"],
    responses=problem_responses(CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION),
)


@router.get(
    "/feeds/{resource:path}",
    summary="A page of a resource's changes (库表共享): long-poll, granted items only, masked, from a cursor",
    responses=problem_responses(
        ExchangeProblem.NOT_A_CONSUMER,
        ExchangeProblem.UNKNOWN_RESOURCE,
        ExchangeProblem.NO_GRANT,
        ExchangeProblem.GRANT_REVOKED,
        ExchangeProblem.GRANT_EXPIRED,
        ExchangeProblem.PURPOSE_NOT_GRANTED,
        ExchangeProblem.FEED_CURSOR_INVALID,
        ExchangeProblem.FEED_CURSOR_EXPIRED,
        ExchangeProblem.FEEDS_UNAVAILABLE,
        CommonProblem.DATABASE_UNAVAILABLE,
    ),
)
async def read_feed(
    resource: str,
    principal: CurrentPrincipal,
    request: Request,
    purpose: Annotated[str, Query(pattern=r"^[0-9A-Za-z\-]{4,64}$", description="事项 code of the grant")],
    cursor: Annotated[str | None, Query(min_length=1, max_length=CURSOR_MAX, description="from the last page")] = None,
    wait: Annotated[float | None, Query(ge=0, le=120, description="seconds to wait for a change")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="most changes on the page")] = 100,
) -> Response:
    feeds: Feeds = request.app.state.feeds
    return OrjsonResponse(await feeds.page(principal, resource, purpose, cursor, wait, limit))
