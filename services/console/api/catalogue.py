"""The data administrator's pages (journey 1): the catalogue (目录) searched, an entry with its items
and versions."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import PersonDep, api_get, page, page_router, readable
from services.console.i18n import N_
from services.console.platform import ApiProblem

SEARCH_MAX = 100  # the registry's search (q)
STATUSES = {
    "draft": N_("Draft"),
    "submitted": N_("Submitted"),
    "published": N_("Published"),
    "deprecated": N_("Deprecated"),
}

VERSION_STATUSES = STATUSES | {"superseded": N_("Superseded")}
CLASSIFICATIONS = {
    "basic": N_("Basic"),
    "theme": N_("Thematic"),
    "department": N_("Departmental"),
}
SHARE_TYPES = {
    "unconditional": N_("Shared without conditions"),
    "conditional": N_("Shared on conditions"),
    "none": N_("Not shared"),
}

router = page_router()


@router.get("/catalogue", response_class=HTMLResponse, summary="Search the catalogue (目录)")
async def catalogue(
    request: Request,
    session: PersonDep,
    q: str = "",
    cursor: str | None = None,
) -> Response:
    params = {"limit": "50"} | ({"q": q} if q.strip() else {}) | ({"cursor": cursor} if cursor else {})
    resources: list[dict[str, object]] = []
    next_cursor, problem, q_error = None, None, None
    if len(q) > SEARCH_MAX:
        q_error = N_("Search for at most 100 characters.")
    else:
        try:
            answer = await api_get(request, session, "/v1/registry/resources", params)
            resources, next_cursor = answer["items"], answer["next_cursor"]
        except ApiProblem as refused:
            problem = readable(refused)
    next_query = urlencode({"q": q, "cursor": next_cursor}) if next_cursor else ""
    return page(
        request,
        session,
        "catalogue.html",
        q=q,
        resources=resources,
        next_cursor=next_cursor,
        next_query=next_query,
        problem=problem,
        q_error=q_error,
        statuses=STATUSES,
        classifications=CLASSIFICATIONS,
    )


@router.get("/catalogue/{code:path}", response_class=HTMLResponse, summary="A catalogue entry, its items and versions")
async def resource(request: Request, session: PersonDep, code: str) -> Response:
    path = f"/v1/registry/resources/{quote(code, safe='/')}"
    try:
        entry = await api_get(request, session, path)
    except ApiProblem as refused:
        # Another department's draft is "not found" to the API, and so to the person.
        message = N_("No such catalogue entry.") if refused.status == 404 else None
        return page(request, session, "problem.html", status=refused.status, message=message, said=readable(refused))
    try:
        versions = (await api_get(request, session, f"{path}/versions"))["items"]
    except ApiProblem:
        versions = None  # the history is the provider's and the platform admin's to see (the API says)
    return page(
        request,
        session,
        "resource.html",
        entry=entry,
        versions=versions,
        statuses=STATUSES,
        version_statuses=VERSION_STATUSES,
        share_types=SHARE_TYPES,
        classifications=CLASSIFICATIONS,
    )
