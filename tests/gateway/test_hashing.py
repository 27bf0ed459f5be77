"""Passwords and client secrets are argon2id; older hashes still work and are replaced on the next
success; an unknown name costs the same time as a wrong password. Real PostgreSQL, rolled back."""

from __future__ import annotations

import base64
import hashlib
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Role
from services.gateway import hashing, service
from services.gateway.models import Department, System, User
from tests.factories import SystemCreateFactory, UserCreateFactory, person
from tests.gateway.support import SETTINGS, lockout_on


def scrypt_hash(password: str) -> str:
    """A password hash as the gateway wrote it before argon2id."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def sha256_hash(secret: str) -> str:
    """A client secret's hash as the gateway wrote it before argon2id (unsalted)."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


# --------------------------------------------------------------------------- the hashes


async def test_a_secret_is_hashed_with_argon2id_and_verifies() -> None:
    stored = await hashing.hash_secret("Tongban-2026")

    assert stored.startswith("$argon2id$")
    assert "Tongban-2026" not in stored
    assert await hashing.verify_secret("Tongban-2026", stored) == hashing.Verdict(ok=True, needs_rehash=False)
    assert await hashing.verify_secret("tongban-2026", stored) == hashing.Verdict(ok=False)


def test_the_dummy_hash_has_the_parameters_of_real_ones() -> None:
    # Otherwise an unknown name would cost a different time than a wrong password.
    assert not hashing.HASHER.check_needs_rehash(hashing.DUMMY_HASH)


@pytest.mark.parametrize("stored", [None, "", "md5$abc", "scrypt$broken", "$argon2id$v=19$garbage"])
async def test_no_input_matches_an_absent_or_unreadable_hash(stored: str | None) -> None:
    assert await hashing.verify_secret("", stored) == hashing.Verdict(ok=False)
    assert await hashing.verify_secret("Tongban-2026", stored) == hashing.Verdict(ok=False)


@pytest.mark.parametrize("legacy", [scrypt_hash, sha256_hash], ids=["scrypt", "sha256"])
async def test_a_hash_from_before_argon2id_verifies_and_asks_to_be_replaced(legacy: Callable[[str], str]) -> None:
    stored = legacy("Tongban-2026")

    assert await hashing.verify_secret("Tongban-2026", stored) == hashing.Verdict(ok=True, needs_rehash=True)
    assert (await hashing.verify_secret("Tongban-2027", stored)).ok is False


async def test_an_argon2id_hash_with_other_parameters_asks_to_be_replaced() -> None:
    weaker = hashing.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("Tongban-2026")

    assert await hashing.verify_secret("Tongban-2026", weaker) == hashing.Verdict(ok=True, needs_rehash=True)


# --------------------------------------------------------------------------- rehash on success


async def test_a_persons_scrypt_password_becomes_argon2id_at_the_next_login(
    session: AsyncSession, department: Department
) -> None:
    user = User(
        username="li.na", dept_code=department.code, password_hash=scrypt_hash("Tongban-2026"), roles=["auditor"]
    )
    session.add(user)
    await session.flush()

    with pytest.raises(Problem):
        await service.authenticate_user(session, lockout_on(session), "li.na", "Tongban-2027")
    assert user.password_hash.startswith("scrypt$")  # a failed login changes nothing

    assert await service.authenticate_user(session, lockout_on(session), "li.na", "Tongban-2026") is user
    assert user.password_hash.startswith("$argon2id$")
    assert await service.authenticate_user(session, lockout_on(session), "li.na", "Tongban-2026") is user


async def test_a_systems_sha256_secret_becomes_argon2id_at_the_next_token(
    session: AsyncSession, department: Department
) -> None:
    admin = person(department.code, Role.PLATFORM_ADMIN)
    system, _ = await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)
    old_secret = secrets.token_urlsafe(32)
    [stored] = await service.client_secrets(session, system.client_id)
    stored.secret_hash = sha256_hash(old_secret)
    await session.flush()

    with pytest.raises(Problem):
        await service.authenticate_client(session, lockout_on(session), system.client_id, old_secret + "x")
    assert stored.secret_hash.startswith("sha256$")

    assert await service.authenticate_client(session, lockout_on(session), system.client_id, old_secret) is system
    assert stored.secret_hash.startswith("$argon2id$")
    assert await service.authenticate_client(session, lockout_on(session), system.client_id, old_secret) is system


# --------------------------------------------------------------------------- timing


async def median_ms(attempt: Callable[[], Awaitable[object]], runs: int = 9) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with pytest.raises(Problem):
            await attempt()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def test_an_unknown_name_costs_the_time_of_a_wrong_password(
    session: AsyncSession, department: Department
) -> None:
    # Before argon2id and the dummy hash: 51 ms against 0.7 ms. A wide band, for a busy machine:
    # what it must catch is a missing hash (a factor of 50), not a few milliseconds of noise.
    admin = person(department.code, Role.PLATFORM_ADMIN)
    quiet = lockout_on(session, threshold=1000)  # the repeated failures here must not lock anyone out
    user = await service.create_user(session, admin, UserCreateFactory.build(department=department.code))
    system: System
    system, _ = await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)

    wrong_password = await median_ms(
        lambda: service.authenticate_user(session, quiet, user.username, "Wrong-password-1")
    )
    unknown_user = await median_ms(lambda: service.authenticate_user(session, quiet, "nobody.here", "Wrong-password-1"))
    wrong_secret = await median_ms(lambda: service.authenticate_client(session, quiet, system.client_id, "x" * 43))
    unknown_client = await median_ms(
        lambda: service.authenticate_client(session, quiet, "sys-0000000000000000", "x" * 43)
    )

    assert 1 / 3 < unknown_user / wrong_password < 3, (unknown_user, wrong_password)
    assert 1 / 3 < unknown_client / wrong_secret < 3, (unknown_client, wrong_secret)
