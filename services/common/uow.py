"""The unit of work (工作单元): one database transaction and the events it causes.

A route takes ``uow: UnitOfWorkDep`` (:mod:`services.common.runtime`): its changes go through
``uow.session`` and its events through ``uow.emit(message)``. When the route returns, the unit
commits — state and events (as outbox rows) in one transaction — and only then publishes the
events; if the route raises, nothing is committed and nothing is published. Services never call
``commit()``. A message batch handler uses the same unit through ``Outbox.unit_of_work()``.

``emit`` on a unit that is not open raises: an event staged where nothing would write it used
to be dropped silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.bus import Message, outgoing_headers

Staged = tuple[uuid.UUID, Message]  # an outbox row id and its message


def stage(message: Message) -> Staged:
    """An outbox row id for ``message``, whose headers now carry the current request id and
    trace: a message the relay publishes after a crash still joins the logs of its request."""
    return uuid.uuid4(), Message(message.topic, message.value, message.key, outgoing_headers(message.headers))


class UnitClosed(RuntimeError):
    """An event was staged outside an open unit of work (it would have been lost)."""


@dataclass(eq=False)
class UnitOfWork:
    session: AsyncSession
    staged: list[Staged] = field(default_factory=list)
    accepts_events: bool = True  # False for a service without an outbox (the gateway, for now)
    open: bool = True

    def emit(self, message: Message) -> None:
        """Stage ``message``: written with this unit's commit, published after it."""
        if not self.open:
            raise UnitClosed("event staged after its unit of work ended; it would be lost")
        if not self.accepts_events:
            raise UnitClosed("this service has no outbox; its units of work cannot emit events")
        self.staged.append(stage(message))
