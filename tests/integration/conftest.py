"""Integration tests: one component at a time against the real PostgreSQL and Kafka of `make infra-up`."""

from __future__ import annotations

import pytest

from tests.stack import infra_env


@pytest.fixture
def bootstrap() -> str:
    return infra_env()["TONGBAN_KAFKA_BOOTSTRAP"]
