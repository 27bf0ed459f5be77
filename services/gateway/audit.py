"""The gateway's audit events (审计事件): tokens issued and denied, sign-ins and failed sign-ins,
lockouts and unlocks, and every administrative change to departments, systems, people, secrets
and keys — each on ``audit.events`` through the outbox, in the unit of work of what it records.

A denial cannot be written in its request's unit of work, which rolls back with the refusal: a
credential route takes a :class:`Trail` (declared before its unit of work, so that it ends after
it) that counts the request's failed check towards a lockout (``service.Lockout.settle``) and
writes the denial, and any lockout it caused, in units of their own once the request's has rolled
back — never holding two pooled connections at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, NoReturn

from fastapi import Depends, Request

from services.common.bus import Message
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.errors import Problem
from services.common.security import Principal, PrincipalType
from services.common.uow import UnitOfWork, stage
from services.gateway.config import GatewaySettings
from services.gateway.models import Outbox

if TYPE_CHECKING:  # service imports this module's users; only the type is needed here
    from services.gateway.service import Lockout

SERVICE = "gateway"
# Outcomes: a token issued, a person signed in, an administrative change made; a request denied;
# a name locked (锁定) by repeated failures.
ISSUED = "issued"
SIGNED_IN = "signed_in"
COMPLETED = "completed"
DENIED = "denied"
LOCKED = "locked"


def event(
    settings: GatewaySettings, action: AuditAction, ctx: AuditContext, *, outcome: str, reason: str = ""
) -> Message:
    return audit_message(settings.topic("audit.events"), SERVICE, action, ctx, outcome=outcome, reason=reason)


def by(principal: Principal, target: str, change: str) -> AuditContext:
    """An administrator's change: who (``principal``), on what (``target``: a department code,
    client id, username or key id, as ``resource``) and which change (as ``purpose``)."""
    return AuditContext(
        actor=principal.sub,
        consumer_dept=principal.dept,
        consumer_client_id=principal.client_id or "",
        resource=target,
        purpose=change,
    )


def record_change(
    uow: UnitOfWork,
    settings: GatewaySettings,
    principal: Principal,
    action: AuditAction,
    target: str,
    change: str,
) -> None:
    """Audit an administrative change, in the unit of work that makes it."""
    uow.emit(event(settings, action, by(principal, target, change), outcome=COMPLETED))


@dataclass
class Trail:
    """The audit of one credential request (a token request or a sign-in): who it claims to be,
    and the lockouts it caused; on failure, :func:`trail` writes the denial after the request's
    unit of work rolled back."""

    settings: GatewaySettings
    denied_action: AuditAction | None  # None: a denial is not audited (introspection), its lockouts are
    ctx: AuditContext = field(default_factory=lambda: AuditContext(actor="", consumer_dept=""))
    lockouts: list[Message] = field(default_factory=list)
    lockout: Lockout | None = None  # the request's, once it has one (api.lockout_of)

    def claims(self, name: str, method: str = "") -> None:
        """The name (client id or username) the request claims, before it is proven."""
        self.ctx = self.ctx.with_(actor=name, purpose=method)

    def locked(self, kind: PrincipalType, name: str) -> None:
        """This request's failure locked ``name`` (called by the lockout, :class:`service.Lockout`)."""
        ctx = AuditContext(actor=name, consumer_dept="", purpose=f"{kind.value}.lockout")
        self.lockouts.append(event(self.settings, AuditAction.LOCKOUT, ctx, outcome=LOCKED))

    def denial(self, problem: Problem) -> list[Message]:
        if self.denied_action is None:
            return list(self.lockouts)
        denied = event(self.settings, self.denied_action, self.ctx, outcome=DENIED, reason=str(problem.code))
        return [denied, *self.lockouts]


async def write_denial(request: Request, trail: Trail, problem: Problem) -> Problem:
    """The request's unit of work has rolled back (it ended first): its failed check is counted
    (the answer becomes the lockout's if that locked the name), and the denial gets its own unit.
    The problem to answer with."""
    if trail.lockout is not None:
        problem = await trail.lockout.settle(problem)
    if messages := trail.denial(problem):
        async with request.app.state.runtime.outbox.unit_of_work(wait_for_publish=False) as uow:
            for message in messages:
                uow.emit(message)
    return problem


async def refuse(request: Request, trail: Trail, problem: Problem) -> NoReturn:
    """Raise the answer to a credential request that failed with ``problem``, once counted and audited."""
    answer = await write_denial(request, trail, problem)
    if answer is not problem:
        raise answer from problem
    raise problem


async def token_trail(request: Request) -> AsyncIterator[Trail]:
    trail = Trail(request.app.state.runtime.settings, AuditAction.TOKEN_DENIED)
    try:
        yield trail
    except Problem as problem:
        await refuse(request, trail, problem)


async def sign_in_trail(request: Request) -> AsyncIterator[Trail]:
    trail = Trail(request.app.state.runtime.settings, AuditAction.SIGN_IN)
    try:
        yield trail
    except Problem as problem:
        await refuse(request, trail, problem)


async def introspection_trail(request: Request) -> AsyncIterator[Trail]:
    """Introspection's denials are not audited; the lockouts its failed client checks cause are."""
    trail = Trail(request.app.state.runtime.settings, None)
    try:
        yield trail
    except Problem as problem:
        await refuse(request, trail, problem)


def unclaimed_row(message: Message) -> Outbox:
    """An outbox row for a process without a relay (the command line): unclaimed, so that a
    running gateway's relay publishes it at its next sweep."""
    row_id, staged = stage(message)
    return Outbox(id=row_id, topic=staged.topic, key=staged.key, value=staged.value, headers=staged.headers)


# Declare before UnitOfWorkDep in a route's parameters: it then ends after the unit of work.
TokenTrail = Annotated[Trail, Depends(token_trail, scope="function")]
SignInTrail = Annotated[Trail, Depends(sign_in_trail, scope="function")]
IntrospectionTrail = Annotated[Trail, Depends(introspection_trail, scope="function")]
