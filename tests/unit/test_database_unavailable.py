"""Which errors mean "the database is out of reach, retry" (503) rather than a bug (500)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from services.common.db import database_unavailable
from services.common.errors import unexpected_problem


def caused_by(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("while answering") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),  # the server's Unix socket is gone
        DBAPIError("SELECT 1", None, Exception("gone"), connection_invalidated=True),
        caused_by(asyncpg.ConnectionDoesNotExistError("lost")),
    ],
)
def test_lost_database_is_a_503_with_retry_after(exc: Exception) -> None:
    assert database_unavailable(exc)
    problem = unexpected_problem(exc)
    assert (problem.status, problem.body()["type"].rsplit("/", 1)[1]) == (503, "database-unavailable")
    assert problem.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        FileNotFoundError(2, "No such file or directory", "/etc/missing.conf"),  # a file, not a socket
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        DBAPIError("SELECT 1", None, Exception("syntax"), connection_invalidated=False),
    ],
)
def test_other_errors_stay_500(exc: Exception) -> None:
    assert not database_unavailable(exc)
    assert unexpected_problem(exc).status == 500
