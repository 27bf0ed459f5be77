"""The README walkthrough, played over HTTP in both run modes."""

from services.demo import DemoCredentials
from tests.e2e.client import walkthrough
from tests.stack import DistributedStack, EmbeddedStack


async def test_walkthrough_distributed(distributed: tuple[DistributedStack, DemoCredentials]) -> None:
    """Every service its own process, real Kafka between them."""
    await walkthrough(distributed[1])


async def test_walkthrough_embedded(embedded: tuple[EmbeddedStack, DemoCredentials]) -> None:
    """One process, in-process bus, same scenario."""
    await walkthrough(embedded[1])
