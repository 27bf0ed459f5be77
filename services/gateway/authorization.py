"""Authorization at the edge (边界授权): which principals may call each endpoint, function level.

One table, ``EDGE_RULES``, names every endpoint of the platform — the gateway's own and those of
the services behind it — with who may call it: a kind of principal (system or person, from the
token's ``principal_type``) holding one of some roles. The gateway refuses anyone else with 403
before the request goes further; the services still check the rest themselves (whose object it
is, which department), so this is a second, coarse line that a missing check in one service
cannot open. ``tests/gateway/test_edge_authorization.py`` checks that every endpoint has a row.

The console's pages (``/console``) are not endpoints of the API and have no rows: the gateway
forwards them whole (``api.forward_page``), the console authenticates its own sessions, and every
call of the API it makes for a page carries the person's token and is checked here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fastapi import Request

from services.common.errors import NotFound
from services.common.security import Principal, PrincipalType, Role, bearer_token, forbidden

SYSTEM, PERSON = PrincipalType.SYSTEM, PrincipalType.PERSON


@dataclass(frozen=True)
class Rule:
    """Who may call an endpoint, and how a refusal looks: ``hidden`` endpoints name an object, and
    answer 404 as the service does for an object that is not yours (existence does not leak)."""

    grants: tuple[Grant, ...]
    hidden: str | None = None  # what the path's object is called in the 404 (None: refuse with 403)


@dataclass(frozen=True)
class Grant:
    """Principals of ``kind`` holding any of ``roles`` (every role when ``roles`` is empty)."""

    kind: PrincipalType
    roles: frozenset[Role] = frozenset()

    def admits(self, principal: Principal) -> bool:
        return principal.type is self.kind and (not self.roles or principal.has_role(*self.roles))


def persons(*roles: Role) -> Rule:
    return Rule((Grant(PERSON, frozenset(roles)),))


def systems(*roles: Role) -> Rule:
    return Rule((Grant(SYSTEM, frozenset(roles)),))


PUBLIC = Rule(())  # no token needed: the endpoint authenticates its caller itself, or is public
ANYONE = Rule((Grant(SYSTEM), Grant(PERSON)))  # any valid token
PLATFORM_ADMIN = persons(Role.PLATFORM_ADMIN)
SYSTEM_MANAGERS = persons(Role.PLATFORM_ADMIN, Role.DATA_ADMIN)  # and the service checks the department
# A system's administration: the service answers 404 to whoever may not manage it.
MANAGED_SYSTEM = Rule(SYSTEM_MANAGERS.grants, hidden="system")
AUDITORS = persons(Role.AUDITOR)
DATA_ADMIN = persons(Role.DATA_ADMIN)
# A person's access report (数据使用记录): the citizen portal and auditors, never a department.
SUBJECT_REPORT = Rule((*systems(Role.CITIZEN_PORTAL).grants, *AUDITORS.grants))

# (method, path template) → who may call it. Path templates as in the OpenAPI documents.
EDGE_RULES: Mapping[tuple[str, str], Rule] = {
    # gateway: tokens and keys
    ("POST", "/oauth2/token"): PUBLIC,
    ("POST", "/oauth2/introspect"): PUBLIC,
    ("POST", "/v1/auth/login"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("GET", "/.well-known/oauth-authorization-server"): PUBLIC,
    # gateway: identities
    ("POST", "/v1/departments"): PLATFORM_ADMIN,
    ("GET", "/v1/departments"): ANYONE,
    ("GET", "/v1/departments/{code}"): ANYONE,
    ("POST", "/v1/departments/{code}/disable"): PLATFORM_ADMIN,
    ("POST", "/v1/departments/{code}/enable"): PLATFORM_ADMIN,
    ("POST", "/v1/departments/{code}/systems"): SYSTEM_MANAGERS,
    ("GET", "/v1/systems"): ANYONE,  # its own department's, or a platform admin's of every department
    ("GET", "/v1/systems/{client_id}"): ANYONE,  # its own department's, or a platform admin
    ("GET", "/v1/systems/{client_id}/secrets"): MANAGED_SYSTEM,
    ("POST", "/v1/systems/{client_id}/secrets"): MANAGED_SYSTEM,
    ("DELETE", "/v1/systems/{client_id}/secrets/{secret_id}"): MANAGED_SYSTEM,
    ("POST", "/v1/systems/{client_id}/disable"): MANAGED_SYSTEM,
    ("POST", "/v1/systems/{client_id}/enable"): MANAGED_SYSTEM,
    ("POST", "/v1/systems/{client_id}/unlock"): MANAGED_SYSTEM,
    ("GET", "/v1/systems/{client_id}/rate-limit"): PLATFORM_ADMIN,
    ("PUT", "/v1/systems/{client_id}/rate-limit"): PLATFORM_ADMIN,
    ("DELETE", "/v1/systems/{client_id}/rate-limit"): PLATFORM_ADMIN,
    ("GET", "/v1/systems/{client_id}/jwks"): MANAGED_SYSTEM,
    ("PUT", "/v1/systems/{client_id}/jwks"): MANAGED_SYSTEM,
    ("GET", "/v1/systems/{client_id}/answer-keys"): MANAGED_SYSTEM,
    ("PUT", "/v1/systems/{client_id}/answer-keys"): MANAGED_SYSTEM,
    # A department's answer-signing public keys: public keys, public as the JWKS above is; the
    # exchange verifies answers with them (the registry here is the authority, not the answer).
    ("GET", "/v1/departments/{code}/answer-keys"): PUBLIC,
    ("GET", "/v1/keys"): PLATFORM_ADMIN,
    ("POST", "/v1/keys/rotate"): PLATFORM_ADMIN,
    ("POST", "/v1/users"): PLATFORM_ADMIN,
    ("GET", "/v1/users"): PLATFORM_ADMIN,
    ("GET", "/v1/users/{username}"): PLATFORM_ADMIN,
    ("PUT", "/v1/users/{username}/roles"): PLATFORM_ADMIN,
    ("POST", "/v1/users/{username}/disable"): PLATFORM_ADMIN,
    ("POST", "/v1/users/{username}/enable"): PLATFORM_ADMIN,
    ("POST", "/v1/users/{username}/unlock"): PLATFORM_ADMIN,
    # registry: the catalogue (目录)
    ("GET", "/v1/registry/classification"): ANYONE,
    ("GET", "/v1/registry/resources"): ANYONE,
    ("POST", "/v1/registry/resources"): SYSTEM_MANAGERS,
    ("GET", "/v1/registry/resources/{code}"): ANYONE,
    ("PATCH", "/v1/registry/resources/{code}"): persons(Role.DATA_ADMIN),
    ("GET", "/v1/registry/resources/{code}/versions"): ANYONE,  # the provider department, or a platform admin
    ("POST", "/v1/registry/resources/{code}/submit"): persons(Role.DATA_ADMIN),
    ("POST", "/v1/registry/resources/{code}/deprecate"): persons(Role.DATA_ADMIN),
    ("POST", "/v1/registry/resources/{code}/publish"): PLATFORM_ADMIN,
    ("POST", "/v1/registry/resources/{code}/reject"): PLATFORM_ADMIN,
    # registry: applications and grants (申请 / 授权)
    ("POST", "/v1/registry/applications"): Rule((*systems(Role.CONSUMER).grants, *persons(Role.DATA_ADMIN).grants)),
    ("GET", "/v1/registry/applications"): ANYONE,  # confined by the registry: own, or the department's
    ("GET", "/v1/registry/applications/{application_id}"): ANYONE,
    ("POST", "/v1/registry/applications/{application_id}/approve"): persons(Role.APPROVER),
    ("POST", "/v1/registry/applications/{application_id}/reject"): persons(Role.APPROVER),
    ("GET", "/v1/registry/grants"): ANYONE,
    ("GET", "/v1/registry/grants/{grant_id}"): ANYONE,  # confined by the registry: the two departments'
    ("POST", "/v1/registry/grants/{grant_id}/revoke"): persons(Role.APPROVER, Role.DATA_ADMIN),
    # registry: the three lists (三清单), service items (事项) and the figures: read by every
    # department; kept by the department's data administrator (the registry checks whose)
    ("GET", "/v1/registry/responsibilities"): ANYONE,
    ("POST", "/v1/registry/responsibilities"): DATA_ADMIN,
    ("GET", "/v1/registry/responsibilities/{line_id}"): ANYONE,
    ("PATCH", "/v1/registry/responsibilities/{line_id}"): DATA_ADMIN,
    ("GET", "/v1/registry/demands"): ANYONE,  # the requesting and the providing department's only
    ("POST", "/v1/registry/demands"): DATA_ADMIN,
    ("GET", "/v1/registry/demands/{demand_id}"): ANYONE,
    ("POST", "/v1/registry/demands/{demand_id}/accept"): DATA_ADMIN,
    ("POST", "/v1/registry/demands/{demand_id}/reject"): DATA_ADMIN,
    ("GET", "/v1/registry/negative-list"): ANYONE,
    ("POST", "/v1/registry/negative-list"): DATA_ADMIN,
    ("DELETE", "/v1/registry/negative-list/{line_id}"): DATA_ADMIN,
    ("GET", "/v1/registry/service-items"): ANYONE,
    ("POST", "/v1/registry/service-items"): DATA_ADMIN,
    ("GET", "/v1/registry/service-items/{code}"): ANYONE,
    ("PATCH", "/v1/registry/service-items/{code}"): DATA_ADMIN,
    ("DELETE", "/v1/registry/service-items/{code}"): DATA_ADMIN,
    ("POST", "/v1/registry/service-items/{code}/materials"): DATA_ADMIN,
    ("PUT", "/v1/registry/service-items/{code}/materials/{material_id}"): DATA_ADMIN,
    ("DELETE", "/v1/registry/service-items/{code}/materials/{material_id}"): DATA_ADMIN,
    ("GET", "/v1/registry/stats"): ANYONE,
    # registry: import and export (批量导入导出); the published catalogue is every department's
    ("GET", "/v1/registry/imports/template.xlsx"): ANYONE,
    ("GET", "/v1/registry/imports/service-items/template.xlsx"): ANYONE,
    ("POST", "/v1/registry/imports/resources"): DATA_ADMIN,
    ("POST", "/v1/registry/imports/service-items"): DATA_ADMIN,
    # an import job (导入任务) of the caller's department: the registry answers 404 for another's
    ("GET", "/v1/registry/imports/{import_id}"): DATA_ADMIN,
    ("GET", "/v1/registry/exports/resources.csv"): ANYONE,
    ("GET", "/v1/registry/exports/resources.json"): ANYONE,
    ("GET", "/v1/registry/exports/dcat"): ANYONE,
    # exchange: only consumer systems query — but every refused query must reach the exchange, which
    # audits it (not-a-consumer…), so the edge lets any token through to it. A person reading a
    # query gets the exchange's own answer to "not yours": 404.
    ("POST", "/v1/exchange/queries"): ANYONE,
    ("GET", "/v1/exchange/queries/{query_id}"): Rule(systems().grants, hidden="query"),
    # An evidence bundle (免提交) is refused and audited by the exchange like a query.
    ("POST", "/v1/exchange/evidence"): ANYONE,
    ("GET", "/v1/exchange/evidence/{bundle_id}"): Rule(systems().grants, hidden="evidence bundle"),
    # A batch is audited per subject (and its refusal as a whole) by the exchange: as for one query.
    ("POST", "/v1/exchange/queries:batch"): ANYONE,
    # 回调地址: a system registers its own; the exchange checks it is a consumer.
    ("PUT", "/v1/exchange/callback-url"): systems(),
    ("GET", "/v1/exchange/callback-url"): systems(),
    # The keys callbacks are signed with: public (public at the service too).
    ("GET", "/v1/exchange/callback-keys"): ANYONE,
    # A provider's answer-signing public keys: anyone holding an answer may verify it.
    ("GET", "/v1/exchange/providers/{dept}/jwks"): ANYONE,
    # 库表共享: like a query, every refused page must reach the exchange, which audits the denial
    ("GET", "/v1/exchange/feeds/{resource}"): ANYONE,
    # audit (审计): the trail's proofs and operations are for auditors; searching it and a person's
    # access report are also for others (a department's data administrator, the citizen portal),
    # confined by the audit service itself; the signed checkpoint is public at the service
    ("GET", "/v1/audit/events"): ANYONE,
    ("GET", "/v1/audit/events/export"): ANYONE,  # CSV of the same search, confined the same way
    ("GET", "/v1/audit/aggregates"): ANYONE,
    ("GET", "/v1/audit/events/{event_id}/proof"): AUDITORS,
    ("GET", "/v1/audit/subjects/accesses"): SUBJECT_REPORT,
    ("POST", "/v1/audit/subjects/accesses"): SUBJECT_REPORT,
    ("GET", "/v1/audit/alerts"): AUDITORS,
    ("POST", "/v1/audit/alerts/{alert_id}/ack"): AUDITORS,
    ("GET", "/v1/audit/export"): AUDITORS,
    # A witness's cosignature is checked by its signature, against the configured witness keys;
    # through the gateway the witness platform calls with a system token of its own.
    ("POST", "/v1/audit/checkpoint/cosignatures"): ANYONE,
    ("GET", "/v1/audit/verify"): AUDITORS,
    ("GET", "/v1/audit/consistency"): AUDITORS,
    ("GET", "/v1/audit/dead-letters"): AUDITORS,
    ("POST", "/v1/audit/checkpoints"): AUDITORS,
    ("GET", "/v1/audit/checkpoint"): ANYONE,
    ("GET", "/v1/audit/checkpoint/key"): ANYONE,
}


def template_pattern(template: str) -> re.Pattern[str]:
    """``/v1/x/{id}/y`` → a pattern matching one path segment per parameter (named after it)."""
    pieces = re.split(r"\{([^}/]+)\}", template)  # literal, name, literal, name, …, literal
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(pieces))
    return re.compile(pattern + r"\Z")


# Proxied paths are matched against the templates (the gateway's own routes know theirs), by
# method: each proxied request tries only its own method's templates, in EDGE_RULES order.
PROXIED: Mapping[str, tuple[tuple[re.Pattern[str], Rule], ...]] = MappingProxyType(
    {
        method: tuple(
            (template_pattern(template), rule)
            for (m, template), rule in EDGE_RULES.items()
            if m == method and template.startswith(("/v1/registry/", "/v1/exchange/", "/v1/audit/"))
        )
        for method in {m for m, _ in EDGE_RULES}
    }
)


def rule_of_path(method: str, path: str) -> tuple[Rule, dict[str, str]] | None:
    """The rule of a proxied request's path and its path parameters; None when it names no
    endpoint (the service answers 404 or 405 itself)."""
    for pattern, rule in PROXIED.get(method, ()):
        if (match := pattern.match(path)) is not None:
            return rule, match.groupdict()
    return None


def authorize(rule: Rule, principal: Principal, params: Mapping[str, str]) -> None:
    """403 (404 for a ``hidden`` rule) unless one of the rule's grants admits ``principal``."""
    if any(g.admits(principal) for g in rule.grants):
        return
    if rule.hidden is not None:
        raise NotFound(rule.hidden, next(iter(params.values()), ""))
    raise forbidden("Your token does not allow this endpoint (边界授权).")


async def edge_authorization(request: Request) -> None:
    """Dependency of the gateway's own routes: the row of ``EDGE_RULES`` for the matched route
    (none: refused — every route has one). Proxied requests never reach a route: ``api.PassThrough``
    checks the path they forward instead."""
    route = request.scope.get("route")
    template = getattr(route, "path", "")
    rule = EDGE_RULES.get((request.method, template))
    if rule is None:
        raise forbidden("This endpoint has no authorization rule.")
    if not rule.grants:
        return
    principal = await request.app.state.runtime.verifier.verify(bearer_token(request.headers.get("authorization")))
    authorize(rule, principal, request.path_params)
