"""Two of every stateless service on the single broker (issue 13 §4): two gateways, two exchanges,
two connectors and two audit consumers, all started at once. One of each kind (its second
replica) is SIGKILLed in turn while queries flow, and stays dead until every query is checked, so
the survivor has to take its share over. (Starting both gateways at once found a defect: both
created the platform department and one exited; bootstrap now takes an advisory lock.)

The load generator spreads the queries over both gateways (round-robin, as a load balancer would)
and, when a call is cut off or answered "still in flight", retries it with the same Idempotency-Key
at the next gateway, as a client should. Each gateway has both exchange replicas and both audit
replicas as upstreams. The connectors and the audit consumers are two members of one consumer
group each: a killed member's partitions are handed to the survivor after its session times out
(queries in them may be answered late), so a query answered at all shows the group rebalanced.

After each kill: every accepted query is in a terminal state the consumer reads through a gateway
(answered; answered late; or, its waiting exchange replica dead, closed as abandoned); each has one
audit outcome chain, as ``test_replica_fault.expected_chain`` states it; the audit chain verifies;
and the provider's backend was asked once per answered query and never twice, counted from both
connectors' access logs (``test_faults.lookups_of``). The killed process is then started again, so
the next kind is killed with two of everything running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services import demo
from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token
from tests.e2e.test_faults import RESIDENTS, SETTLE_S, TIMEOUT_MS, lookups_of
from tests.e2e.test_replica_fault import FAST_ABANDON, audit_chains, expected_chain, late_replies_consumed, settled
from tests.stack import SERVICES, DistributedStack, asyncpg_dsn, create_database, drop_database, free_port, infra_env

REPLICATED = ("gateway", "exchange", "connector", "audit")
GATEWAYS = ("gateway", "gateway-b")
CONNECTORS = ("connector", "connector-b")
QUERIES = 30  # per kill
SENDERS = 4
RETRY_FOR_S = 30.0  # a query still cut off or in flight after this is a failure
READY_S = 180.0  # nine processes start at once on two shared cores
RETRYABLE = {"idempotency-in-progress", "query-interrupted", "upstream-unavailable", "upstream-timeout"}


class ReplicatedStack(DistributedStack):
    """A distributed stack with a second replica ``<name>-b`` of each service in ``REPLICATED``."""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if "-" not in k}  # no TONGBAN_EXCHANGE-B_PORT
        for name in ("exchange", "audit"):
            env[f"TONGBAN_{name.upper()}_URL"] = ",".join(self.url(n) for n in (name, f"{name}-b"))
        return {**env, **FAST_ABANDON, "TONGBAN_CONNECTOR_LOG_LOOKUPS": "true"}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_service(self, name: str) -> None:
        kind, _, twin = name.partition("-")
        self.spawn(name, f"services.{kind}", {f"TONGBAN_{kind.upper()}_PORT": str(self.ports[name])} if twin else {})

    async def start(self) -> DemoCredentials:
        """Both of each replicated service at once, as a rollout does (migrations take turns under
        their advisory lock); the gateways first, since the others read the signing keys from them."""
        for name in REPLICATED:
            self.ports[f"{name}-b"] = free_port()
        for wave in (["gateway", "gateway-b"], [n for s in SERVICES[1:] for n in (s, f"{s}-b") if n in self.ports]):
            for name in wave:
                self.start_service(name)
            for name in wave:
                await self.wait_ready(name, READY_S)
        creds = await demo.seed(self.gateway, self.admin_password, self.url("connector"))
        await demo.wait_until_queryable(creds)
        return creds


@pytest.fixture(scope="module")
async def replicated() -> AsyncIterator[tuple[ReplicatedStack, DemoCredentials]]:
    stack = ReplicatedStack(database_url=await create_database(infra_env()["TONGBAN_DATABASE_URL"]))
    try:
        yield stack, await stack.start()
    finally:
        stack.stop_all()
        await drop_database(stack.database_url)


async def ask(
    gateways: list[httpx.AsyncClient], first: int, headers: dict[str, str], creds: DemoCredentials, subject: str
) -> tuple[str, int]:
    """One query, sent to gateway ``first`` and retried at the next with the same Idempotency-Key
    while it is cut off or still in flight; its id, and how many attempts were cut off."""
    body = query_body(creds, subject={"type": "id_card", "value": subject}, timeout_ms=TIMEOUT_MS)
    key, cut_off = str(uuid.uuid4()), 0
    deadline = asyncio.get_running_loop().time() + RETRY_FOR_S
    for attempt in range(10**6):
        assert asyncio.get_running_loop().time() < deadline, f"no answer for {key} after {RETRY_FOR_S} s"
        gateway = gateways[(first + attempt) % len(gateways)]
        try:
            response = await gateway.post(
                "/v1/exchange/queries", json=body, headers={**headers, "Idempotency-Key": key}
            )
        except httpx.TransportError:  # the gateway died under the call, or is dead
            cut_off += 1
            await asyncio.sleep(0.1)
            continue
        answer: dict[str, Any] = response.json()
        if response.status_code == 200:
            return str(answer["id"]), cut_off
        code = answer.get("type", "").rsplit("/", 1)[-1]
        if response.status_code == 504 and code == "provider-timeout":
            return str(answer["query_id"]), cut_off
        assert code in RETRYABLE, response.text
        await asyncio.sleep(0.3)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", REPLICATED)
async def test_one_replica_of_each_kind_killed_while_queries_flow(
    replicated: tuple[ReplicatedStack, DemoCredentials], kind: str
) -> None:
    stack, creds = replicated
    # The second of each: the first gateway's address is what the services fetch the signing keys
    # from (TONGBAN_GATEWAY_URL), standing for the load-balanced Service of deploy/k8s, which no
    # replica's death takes away.
    victim = f"{kind}-b"
    subjects = RESIDENTS[600 + 40 * REPLICATED.index(kind) :][:QUERIES]
    db = await asyncpg.connect(asyncpg_dsn(stack.database_url)[0])
    gateways = [httpx.AsyncClient(base_url=stack.url(name), timeout=60.0) for name in GATEWAYS]
    try:
        headers = await system_token(gateways[0], creds)  # a token one gateway issued, honoured by both
        auditor = await person_token(gateways[1], "auditor")
        waiting = asyncio.Queue[str]()
        for subject in subjects:
            waiting.put_nowait(subject)
        ids: list[str] = []
        cut_off = 0
        sent = 0
        flowing = asyncio.Event()  # a third answered: the load is flowing through both of each

        async def sender() -> None:
            nonlocal cut_off, sent
            while not waiting.empty():
                subject, first = waiting.get_nowait(), sent
                sent += 1
                query_id, cuts = await ask(gateways, first, headers, creds, subject)
                ids.append(query_id)
                cut_off += cuts
                if len(ids) >= QUERIES // 3:
                    flowing.set()
                await asyncio.sleep(0.05)

        senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
        await flowing.wait()
        stack.stop(victim, kill=True)
        killed_after = len(ids)
        await asyncio.gather(*senders)
        assert len(ids) == QUERIES == len(set(ids))

        # Every query in a terminal state with its audit outcomes; then again a moment later, when
        # a duplicate record (or a late reply to an abandoned query) would have come.
        answered = kind != "exchange"  # only a dead exchange leaves queries unanswered (abandoned)
        await settled(db, ids, timeout_s=SETTLE_S, answered=answered)
        await late_replies_consumed(stack, SETTLE_S)  # a dead exchange's share of the replies, handled
        _, first = await audit_chains(db, ids, timeout_s=SETTLE_S)  # every query's final record is in
        await asyncio.sleep(2.0)
        await settled(db, ids, timeout_s=SETTLE_S, answered=answered)
        statuses, chains = await audit_chains(db, ids, timeout_s=SETTLE_S)
        assert set(statuses.values()) <= {"completed", "late_reply", "timeout"}, statuses
        changed = {q: (first[q], chains[q]) for q in ids if first[q] != chains[q]}
        # Audited exactly once: one outcome chain per query.
        for query_id, chain in chains.items():
            assert chain == expected_chain(statuses[query_id], chain), (query_id, statuses[query_id], chain, changed)

        # Read by the consumer through the gateway(s) alive.
        alive = [g for name, g in zip(GATEWAYS, gateways, strict=True) if name in stack.processes]
        for n, query_id in enumerate(ids):
            read = await alive[n % len(alive)].get(f"/v1/exchange/queries/{query_id}", headers=headers)
            assert read.status_code == 200, read.text
            assert read.json()["status"] == statuses[query_id] or (statuses[query_id], read.json()["status"]) == (
                "timeout",
                "late_reply",  # its late reply came meanwhile
            )
        verify = await alive[0].get("/v1/audit/verify", headers=auditor)
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
    finally:
        for gateway in gateways:
            await gateway.aclose()
        await db.close()

    # The provider asked once per answered query, never twice, by either connector.
    asked = lookups_of(stack, ids, CONNECTORS)
    assert {q: n for q, n in asked.items() if n > 1} == {}, "the backend was asked more than once"
    assert [q for q in ids if statuses[q] != "timeout" and asked[q] != 1] == [], "answered without a look-up?"
    by_connector = {name: sum(lookups_of(stack, ids, (name,)).values()) for name in CONNECTORS}
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("completed", "late_reply", "timeout")}
    print(
        f"\n{victim} SIGKILLed after {killed_after} of {QUERIES} answered: {counts}, {cut_off} calls cut off and "
        f"retried, look-ups {by_connector}, duplicate look-ups 0, audit chains {len(chains)} (one per query)"
    )

    # Two of each again for the next kind.
    stack.start_service(victim)
    await stack.wait_ready(victim, READY_S)
