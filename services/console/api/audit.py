"""The auditor's pages (journey 4, 审计员): the access search (访问记录查询) with every filter of the
audit API and its CSV export, "who looked at this person" (个人查询记录), the hash chain verified
with the latest checkpoint and its witnesses, the anomaly alerts acknowledged, and a dashboard of
charts (统计图表) drawn by ``static/dashboard.js`` from ``/console/audit/dashboard.json``.

Everything comes from the platform's API as the person (``/v1/audit/…``, ``/v1/registry/stats``):
the console checks the shape of what was typed, to put an error next to its field, and decides
nothing else."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import httpx
from fastapi import Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from services.common.contracts.audit import AuditAction
from services.console.api.common import (
    PersonDep,
    SignInAgain,
    api_get,
    api_send,
    console_of,
    go,
    local_time,
    page,
    page_router,
    readable,
)
from services.console.i18n import N_
from services.console.platform import ApiProblem
from services.console.session import Session

router = page_router()

PAGE_SIZE = "50"
# The audit API's search filters (services/audit/api.py: FILTERS) and the longest value each takes.
# The subject is not among them: an identifier typed here would travel in this page's URL; it has
# its own page, which sends it in a POST body (subject_page below).
TEXT_FILTERS = {
    "consumer": 64,
    "provider": 64,
    "resource": 64,
    "purpose": 64,
    "outcome": 64,
    "reason": 64,
    "client_id": 64,
    "bundle_id": 40,
    "batch_id": 40,
}
TIME_FILTERS = ("from", "to")
FILTER_NAMES = (*TIME_FILTERS, "type", *TEXT_FILTERS)
ACTIONS = tuple(a.value for a in AuditAction)
# Outcomes the platform's services record, offered as suggestions (the field takes any value).
OUTCOMES = ("completed", "denied", "failed", "timeout", "late_reply", "locked")
ORDERS = {"desc": N_("Newest first"), "asc": N_("Oldest first")}
# Why the exchange refused a query: the codes of its denials (services/exchange/problems.py:
# DENIALS, each audited with its code as the reason), in words for people.
# tests/unit/test_console_audit.py checks every denial has its words here.
DENIAL_REASONS = {
    "not-a-consumer": N_("Not a consuming system"),
    "invalid-subject": N_("Invalid subject identifier"),
    "unknown-resource": N_("Unknown resource"),
    "no-grant": N_("No grant"),
    "grant-revoked": N_("Grant revoked"),
    "grant-expired": N_("Grant expired"),
    "purpose-not-granted": N_("Purpose not granted"),
    "unknown-items": N_("Unknown information items"),
    "item-not-granted": N_("Item not granted"),
    "quota-exceeded": N_("Daily quota used up"),
    "batch-too-large": N_("Too many subjects in one batch"),
    "callback-url-not-https": N_("Callback URL is not https"),
    "callback-url-not-registered": N_("Callback URL not registered"),
}

BAD_TIME = N_("Enter a date and time, such as 2026-03-02T10:00.")
TOO_LONG = N_("Too long for this field.")
UNKNOWN_ACTION = N_("Choose an action from the list.")
TIME_RANGE = N_("The end of the range is before its start.")
SUBJECT_TYPES = {"id_card": N_("Resident identity card number"), "credit_code": N_("Unified social credit code")}
ALERT_RULES = {
    "volume": N_("Sudden rise in queries"),
    "off_hours": N_("Queries outside working hours"),
    "denials": N_("Repeated denials"),
    "subject_spread": N_("One person read by many departments"),
    "rare_purpose": N_("A rarely used service item"),
}
# A refusal of the API for someone who is not an auditor (the API's detail follows it).
AUDITORS_ONLY = N_("Only auditors may see this.")
ALERT_PROBLEMS = {
    "alert-already-acknowledged": N_("This alert has already been acknowledged."),
    "unknown-alert": N_("No such alert."),
}


@dataclass(frozen=True)
class Search:
    """What the search form holds: the filters typed (kept as typed), their errors, the order."""

    typed: dict[str, str]
    order: str
    errors: dict[str, str]

    @property
    def params(self) -> dict[str, str]:
        """The filters given, as the audit API takes them."""
        return {name: value for name, value in self.typed.items() if value} | {"order": self.order}

    @property
    def query(self) -> str:
        """The form as a query string (the export link, the next page)."""
        return urlencode({name: value for name, value in self.typed.items() if value} | {"order": self.order})


def read_search(request: Request) -> Search:
    """The filters of the page's query string, each checked for its shape."""
    given = request.query_params
    typed = {name: given.get(name, "").strip() for name in FILTER_NAMES}
    errors: dict[str, str] = {}
    for name in TIME_FILTERS:
        if typed[name]:
            try:
                datetime.fromisoformat(typed[name])
            except ValueError:
                errors[name] = BAD_TIME
    for name, longest in TEXT_FILTERS.items():
        if len(typed[name]) > longest:
            errors[name] = TOO_LONG
    if typed["type"] and typed["type"] not in ACTIONS:
        errors["type"] = UNKNOWN_ACTION
    order = given.get("order", "desc")
    return Search(typed, order if order in ORDERS else "desc", errors)


def lead_of(refused: ApiProblem) -> str | None:
    """Our words before the API's for a refusal a person may meet here (not an auditor)."""
    return AUDITORS_ONLY if refused.status == 403 else None


def api_errors(refused: ApiProblem) -> dict[str, str]:
    """The audit API's refusal of a search next to the fields it names; else above the form."""
    if refused.code == "time-range-invalid":
        return {"to": TIME_RANGE}
    named = {field: message for field, message in refused.fields.items() if field in FILTER_NAMES}
    return named or {"search": readable(refused)}


def audit_page(request: Request, session: Session, template: str, status: int = 200, **context: object) -> Response:
    return page(request, session, template, status=status, orders=ORDERS, denial_reasons=DENIAL_REASONS, **context)


@router.get("/audit", response_class=HTMLResponse, summary="Search the access records (访问记录查询)")
async def search(request: Request, session: PersonDep, cursor: str | None = None) -> Response:
    """The audit API's search with every filter it offers, 50 a page, newest first by default."""
    form = read_search(request)
    records: list[dict[str, Any]] = []
    next_cursor, errors = None, dict(form.errors)
    if not errors:
        try:
            params = form.params | {"limit": PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
            answer = await api_get(request, session, "/v1/audit/events", params)
            records, next_cursor = answer["items"], answer["next_cursor"]
        except ApiProblem as refused:
            errors = api_errors(refused)
    for record in records:
        record["when"] = local_time(record["occurred_at"], request)
    return audit_page(
        request,
        session,
        "audit_search.html",
        status=400 if errors else 200,
        form=form,
        errors=errors,
        records=records,
        next_query=urlencode({"cursor": next_cursor}) if next_cursor else "",
        actions=ACTIONS,
        outcomes=OUTCOMES,
    )


EXPORT_NAME = "审计记录.csv"


async def passed_on(answer: httpx.Response) -> AsyncIterator[bytes]:
    """The API's body as it comes; the answer closed however the download ends."""
    try:
        async for chunk in answer.aiter_bytes():
            yield chunk
    finally:
        await answer.aclose()


@router.get("/audit/export", summary="The same search as CSV (导出)")
async def export(request: Request, session: PersonDep) -> Response:
    """The audit API's CSV of the search (UTF-8 with a BOM), streamed through the console as the
    API streams it (an export may hold a million records); a refused filter shows the search page
    with its error instead — the API refuses before its first byte."""
    form = read_search(request)
    errors = dict(form.errors)
    if not errors:
        try:
            answer = await console_of(request).platform.open(
                session, "GET", "/v1/audit/events/export", params=form.params
            )
        except ApiProblem as refused:
            if refused.status == 401:
                raise SignInAgain(session.signed_out()) from refused
            errors = api_errors(refused)
        else:
            # RFC 6266: an ASCII name for old clients, the Chinese one in filename* (RFC 8187).
            disposition = f"attachment; filename=\"audit-records.csv\"; filename*=UTF-8''{quote(EXPORT_NAME)}"
            return StreamingResponse(
                passed_on(answer),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
            )
    return audit_page(
        request,
        session,
        "audit_search.html",
        status=400,
        form=form,
        errors=errors,
        records=[],
        next_query="",
        actions=ACTIONS,
        outcomes=OUTCOMES,
    )


# ----------------------------------------------------------------------------- 个人查询记录

SUBJECT_REQUIRED = N_("Enter the identifier of the person or organisation.")
SUBJECT_LONGEST = 32  # services/audit/schemas.py: SubjectRef.value


@router.get("/audit/subject", response_class=HTMLResponse, summary="Who looked at this person (个人查询记录)")
async def subject_form(request: Request, session: PersonDep) -> Response:
    return audit_page(request, session, "audit_subject.html", subject_types=SUBJECT_TYPES, errors={}, typed={})


@router.post("/audit/subject", response_class=HTMLResponse, summary="Who looked at this person: the answer")
async def subject_accesses(
    request: Request,
    session: PersonDep,
    value: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "id_card",
    from_: Annotated[str, Form(alias="from")] = "",
    to: Annotated[str, Form()] = "",
) -> Response:
    """The accesses to the person's data, from the API's POST (the identifier in the body, never in
    a URL). The identifier is not logged, kept, or written back into the page: the answer's form
    is empty, and so is the form of a refusal."""
    typed = {"type": type if type in SUBJECT_TYPES else "id_card", "from": from_.strip(), "to": to.strip()}
    errors: dict[str, str] = {}
    value = value.strip()
    if not value:
        errors["value"] = SUBJECT_REQUIRED
    elif len(value) > SUBJECT_LONGEST:
        errors["value"] = TOO_LONG
    times: dict[str, str] = {}
    for name in TIME_FILTERS:
        if typed[name]:
            try:
                moment = datetime.fromisoformat(typed[name])
            except ValueError:
                errors[name] = BAD_TIME
            else:
                # The API takes times with an offset only: one typed without is in the platform's zone.
                zone = console_of(request).settings.zone
                times[name] = (moment if moment.tzinfo else moment.replace(tzinfo=zone)).isoformat()
    accesses: list[dict[str, Any]] | None = None
    more = False
    if not errors:
        body: dict[str, Any] = {"subject": {"type": typed["type"], "value": value}, "limit": 200} | times
        try:
            answer = await api_send(request, session, "POST", "/v1/audit/subjects/accesses", body)
            accesses, more = answer["items"], answer["next_cursor"] is not None
        except ApiProblem as refused:
            if refused.code == "invalid-subject":
                errors["value"] = N_("This is not a valid identifier of that kind.")
            elif refused.code == "time-range-invalid":
                errors["to"] = TIME_RANGE
            else:
                errors["subject"] = readable(refused)
                errors["subject_lead"] = lead_of(refused) or ""
        for access in accesses or []:
            access["when"] = local_time(access["occurred_at"], request)
    del value  # nothing below may show it
    return audit_page(
        request,
        session,
        "audit_subject.html",
        status=400 if errors else 200,
        subject_types=SUBJECT_TYPES,
        errors=errors,
        typed=typed,
        accesses=accesses,
        more=more,
    )


# ----------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Signature:
    """A signature line of a checkpoint: who signed it and, for a witness's cosignature, when."""

    name: str
    signed_at: str | None


@dataclass(frozen=True)
class CheckpointView:
    origin: str
    tree_size: str
    root: str
    log: list[Signature]
    witnesses: list[Signature]
    note: str


COSIGNATURE_BYTES = 4 + 8 + 64  # C2SP tlog-cosignature: key hash, time, Ed25519 signature


def read_checkpoint(note: str, log_name: str, zone: ZoneInfo) -> CheckpointView:
    """The parts of a C2SP signed note (tlog-checkpoint) a person reads: origin, tree size, root,
    and who signed it — the log's own key, then each witness's cosignature with its time (in
    ``zone``). For display only: the audit API's verification is what checks the signatures
    (``/v1/audit/verify``)."""
    body, _, signatures = note.partition("\n\n")
    lines = body.split("\n")
    log: list[Signature] = []
    witnesses: list[Signature] = []
    for line in signatures.splitlines():
        name, _, encoded = line.removeprefix("\u2014 ").partition(" ")
        if not line.startswith("\u2014 ") or not name:
            continue
        if name == log_name:
            log.append(Signature(name, None))
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raw = b""
        when = None
        if len(raw) == COSIGNATURE_BYTES:
            try:
                moment = datetime.fromtimestamp(int.from_bytes(raw[4:12], "big"), UTC)
            except (OverflowError, OSError, ValueError):  # a time no calendar shows: none shown
                pass
            else:
                when = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        witnesses.append(Signature(name, when))
    return CheckpointView(
        origin=lines[0] if lines else "",
        tree_size=lines[1] if len(lines) > 1 else "",
        root=lines[2] if len(lines) > 2 else "",
        log=log,
        witnesses=witnesses,
        note=note,
    )


@router.get("/audit/chain", response_class=HTMLResponse, summary="The chain verified, the latest checkpoint")
async def chain(request: Request, session: PersonDep, verify: str | None = None) -> Response:
    """The latest signed checkpoint with its witnesses' cosignatures; with ``verify``, the audit
    API's check of the whole chain, tree, checkpoints and cosignatures (a read: a GET)."""
    platform = console_of(request).platform
    checkpoint: CheckpointView | None = None
    problem, said, lead = None, None, None  # ours (translated), the API's own words
    try:
        note = (await platform.fetch(session, "GET", "/v1/audit/checkpoint")).text
        key = (await platform.fetch(session, "GET", "/v1/audit/checkpoint/key")).text.strip()
        checkpoint = read_checkpoint(note, key.split("+", 1)[0], console_of(request).settings.zone)
    except ApiProblem as refused:
        if refused.code == "no-checkpoint":
            problem = N_("No checkpoint has been signed yet.")
        else:
            said, lead = readable(refused), lead_of(refused)
    report, refusal = None, None  # a refusal to verify is not a failed verification: shown apart
    if verify is not None:
        try:
            report = await api_get(request, session, "/v1/audit/verify")
        except ApiProblem as refused:
            refusal = (lead_of(refused) or "", readable(refused))
    return audit_page(
        request,
        session,
        "audit_chain.html",
        checkpoint=checkpoint,
        problem=problem,
        said=said,
        lead=lead,
        report=report,
        refusal=refusal,
    )


# ----------------------------------------------------------------------------- alerts

ALERT_VIEWS = {"open": "false", "acknowledged": "true", "all": ""}


async def alerts_page(
    request: Request,
    session: Session,
    show: str,
    cursor: str | None = None,
    *,
    status: int = 200,
    error: tuple[str, str, str] | None = None,
    done: str | None = None,
) -> Response:
    """The alerts (open, acknowledged or all); ``error`` is (the alert's id, why it was refused in
    the person's language, the API's own words), shown above and on its row; ``done`` the alert
    just acknowledged."""
    show = show if show in ALERT_VIEWS else "open"
    params = {"limit": PAGE_SIZE} | ({"acknowledged": ALERT_VIEWS[show]} if ALERT_VIEWS[show] else {})
    if cursor and cursor.isdigit() and len(cursor) <= 18:
        params["cursor"] = cursor
    found: dict[str, Any] = {"items": [], "next_cursor": None}
    problem, lead = None, None
    try:
        found = await api_get(request, session, "/v1/audit/alerts", params)
    except ApiProblem as refused:
        problem, lead, status = readable(refused), lead_of(refused), max(status, refused.status)
    for alert in found["items"]:
        alert["raised"] = local_time(alert["raised_at"], request)
        alert["window"] = f"{local_time(alert['window_start'], request)} – {local_time(alert['window_end'], request)}"
        alert["acknowledged"] = local_time(alert["acknowledged_at"], request) if alert["acknowledged_at"] else ""
    return audit_page(
        request,
        session,
        "audit_alerts.html",
        status=status,
        show=show,
        found=found,
        problem=problem,
        lead=lead,
        rules=ALERT_RULES,
        error=error,
        done=done if done and done.isdigit() else None,
    )


@router.get("/audit/alerts", response_class=HTMLResponse, summary="Anomaly alerts (异常告警)")
async def alerts(
    request: Request, session: PersonDep, show: str = "open", cursor: str | None = None, done: str | None = None
) -> Response:
    return await alerts_page(request, session, show, cursor, done=done)


@router.post("/audit/alerts/{alert_id}/ack", summary="Acknowledge an alert (确认告警)")
async def acknowledge(request: Request, session: PersonDep, alert_id: str) -> Response:
    """The audit API's acknowledgement; its refusal (already acknowledged, no such alert) is shown
    on the alerts page, next to the alert."""
    if not (alert_id.isdigit() and len(alert_id) <= 18):
        refusal = (alert_id[:20], ALERT_PROBLEMS["unknown-alert"], "")
        return await alerts_page(request, session, "all", status=404, error=refusal)
    try:
        await api_send(request, session, "POST", f"/v1/audit/alerts/{alert_id}/ack")
    except ApiProblem as refused:
        refusal = (alert_id, ALERT_PROBLEMS.get(refused.code, ""), readable(refused))
        return await alerts_page(request, session, "all", status=refused.status, error=refusal)
    return go(request, session, f"/console/audit/alerts?show=acknowledged&done={alert_id}")


# ----------------------------------------------------------------------------- the dashboard


async def dashboard_data(request: Request, session: Session) -> dict[str, Any]:
    """The charts' data, from the API's own figures: queries per day by consuming department and
    denials by reason (``/v1/audit/aggregates``, the last 30 days), the 免提交 rate and the overdue
    applications by department (``/v1/registry/stats``)."""
    names = console_of(request).department_names
    said = console_of(request).catalogues[session.language].gettext
    queries = await api_get(
        request, session, "/v1/audit/aggregates", {"by": "consumer", "type": AuditAction.EXCHANGE_QUERY.value}
    )
    denials = await api_get(request, session, "/v1/audit/aggregates", {"by": "reason", "outcome": "denied"})
    stats = await api_get(request, session, "/v1/registry/stats")
    days = sorted({str(i["day"]) for i in queries["items"]})
    per_department: dict[str, dict[str, int]] = {}
    for item in queries["items"]:
        per_department.setdefault(str(item["key"]), {})[str(item["day"])] = int(item["total"])
    reasons: dict[str, int] = {}
    for item in denials["items"]:
        reasons[str(item["key"]) or "—"] = reasons.get(str(item["key"]) or "—", 0) + int(item["total"])
    departments = [d for d in stats["departments"] if d.get("dept")]
    return {
        "range": {"from": queries["from"], "to": queries["to"]},
        "queries": {
            "days": days,
            "series": [
                {"dept": dept, "name": names.get(dept, dept), "counts": [counts.get(day, 0) for day in days]}
                for dept, counts in sorted(per_department.items())
            ],
        },
        "denials": [
            {"reason": r, "label": said(DENIAL_REASONS.get(r, r)), "count": n}
            for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "exempt": [
            {
                "dept": d["dept"],
                "name": names.get(d["dept"], d["dept"]),
                "materials": d["materials"],
                "exempt": d["exempt_materials"],
                "rate": d["exempt_rate"],
            }
            for d in departments
            if d["exempt_rate"] is not None
        ],
        "applications": [
            {
                "dept": d["dept"],
                "name": names.get(d["dept"], d["dept"]),
                "pending": d["applications"]["pending"],
                "overdue": d["applications"]["overdue"],
            }
            for d in departments
            if d["applications"]["pending"]
        ],
        "overall": {
            "exempt_rate": stats["overall"]["exempt_rate"],
            "pending": stats["overall"]["applications"]["pending"],
            "overdue": stats["overall"]["applications"]["overdue"],
        },
    }


@router.get("/audit/dashboard", response_class=HTMLResponse, summary="Charts (统计图表)")
async def dashboard(request: Request, session: PersonDep) -> Response:
    """The charts' page: each chart is drawn by static/dashboard.js from dashboard.json, and has
    the same figures in a table beside it (its text alternative, and what is left without script)."""
    data, problem, lead, status = None, None, None, 200
    try:
        data = await dashboard_data(request, session)
    except ApiProblem as refused:
        problem, lead, status = readable(refused), lead_of(refused), refused.status
    return audit_page(request, session, "audit_dashboard.html", status=status, data=data, problem=problem, lead=lead)


@router.get("/audit/dashboard.json", summary="The charts' data (JSON)")
async def dashboard_json(request: Request, session: PersonDep) -> Response:
    try:
        data = await dashboard_data(request, session)
    except ApiProblem as refused:
        return JSONResponse({"error": readable(refused)}, status_code=refused.status)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})
