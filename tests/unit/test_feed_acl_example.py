"""The README's example of a large consumer reading a change feed topic directly (库表共享) is a
valid Strimzi ``KafkaUser`` for the cluster of ``deploy/k8s``, reading only a feed topic that the
manifests declare, and the platform's own users write and read that topic as the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_k8s_manifests import crd_errors, crd_schemas, named, of_kind, render

ROOT = Path(__file__).resolve().parents[2]


def example() -> dict[str, Any]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**A large consumer reading the topic directly.**") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the README's direct-read example is missing"
    user: dict[str, Any] = yaml.safe_load(block[1])
    return user


def topic_acls(user: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in user["spec"]["authorization"]["acls"] if a["resource"]["type"] == "topic"]


def test_the_direct_read_example_matches_the_manifests() -> None:
    user = example()
    assert user["kind"] == "KafkaUser"
    assert crd_errors(user, crd_schemas()) == []
    prod = render("prod")
    kafka = named(prod, "Kafka", "tongban-kafka")
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert user["spec"]["authentication"]["type"] == "tls"
    feeds = {t["spec"]["topicName"] for t in of_kind(prod, "KafkaTopic")} & {
        a["resource"]["name"] for a in topic_acls(user)
    }
    (acl,) = topic_acls(user)  # one topic, a declared feed topic, read only
    assert acl["resource"]["patternType"] == "literal" and acl["resource"]["name"] in feeds
    assert acl["resource"]["name"].startswith("tongban.exchange.feeds.")
    assert sorted(acl["operations"]) == ["Describe", "Read"]
    (group,) = [a for a in user["spec"]["authorization"]["acls"] if a["resource"]["type"] == "group"]
    assert group["operations"] == ["Read"] and group["resource"]["patternType"] == "literal"
    # The platform: the exchange reads every feed, the topic's provider connector writes it.
    users = {u["metadata"]["name"]: u for u in of_kind(prod, "KafkaUser")}
    exchange = topic_acls(users["tongban-exchange"])
    assert any(
        a["resource"] == {"type": "topic", "name": "tongban.exchange.feeds.", "patternType": "prefix"}
        and "Read" in a["operations"]
        for a in exchange
    )
    writers = [
        name
        for name, u in users.items()
        for a in topic_acls(u)
        if a["resource"]["name"] == acl["resource"]["name"] and "Write" in a["operations"]
    ]
    assert writers and all(name.startswith("tongban-connector-") for name in writers)
