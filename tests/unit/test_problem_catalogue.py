"""Every problem type the README documents exists in a catalogue, and every catalogued one is
documented: the codes are a contract clients branch on."""

import re
from pathlib import Path

from services.audit.problems import AuditProblem
from services.common.errors import CommonProblem, ProblemCode
from services.exchange.problems import ExchangeProblem
from services.gateway.problems import GatewayProblem
from services.registry.problems import RegistryProblem

README = Path(__file__).resolve().parents[2] / "README.md"
CATALOGUES: list[type[ProblemCode]] = [CommonProblem, GatewayProblem, RegistryProblem, ExchangeProblem, AuditProblem]


def documented() -> set[str]:
    text = README.read_text()
    section = text.split("## Problem types", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| "))
    return set(re.findall(r"`([a-z0-9-]+)`", table))


def catalogued() -> set[str]:
    return {member.value for catalogue in CATALOGUES for member in catalogue}


def test_every_documented_code_exists() -> None:
    assert documented() - catalogued() == set()


def test_every_code_is_documented() -> None:
    assert catalogued() - documented() == set()


def test_codes_are_unique_across_catalogues_unless_they_mean_the_same() -> None:
    seen: dict[str, int] = {}
    for catalogue in CATALOGUES:
        for member in catalogue:
            assert seen.setdefault(member.value, member.status) == member.status, member
