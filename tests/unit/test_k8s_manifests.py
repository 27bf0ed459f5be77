"""Offline validation of ``deploy/k8s/``: both overlays rendered, every object checked.

Rendering uses the kustomize built into ``kubectl`` (``kubectl kustomize``, kustomize v5): the real
renderer, in well under a second, rather than a Python imitation of it. Where kubectl is missing,
``make test`` has built kustomize itself into ``var/bin`` (``make kustomize``, from the Go module
proxy). Neither there fails the test with a message; it never skips.

Built-in kinds are validated against the Kubernetes OpenAPI schemas in strict mode
(``kubernetes-validate``); custom resources against the ``openAPIV3Schema`` of the CRDs vendored
under ``deploy/k8s/crds/``, made strict the same way (an unknown field is an error, as with the API
server's strict field validation). Then the policies a reviewer checks.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRDS = K8S / "crds"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33"
CUSTOM_KINDS = {
    *("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"),  # Strimzi
    *("Cluster", "Pooler", "ScheduledBackup"),  # CloudNativePG
    *("ScaledObject", "TriggerAuthentication"),  # KEDA
    *("ServiceMonitor", "PrometheusRule"),  # prometheus-operator
}
SERVICES = ("gateway", "registry", "exchange", "audit", "connector", "console")
TOPICS = (
    "exchange.replies",
    "exchange.dlq",
    "exchange.ledger",
    "audit.events",
    "registry.events",
    "exchange.feeds.101010.000001",  # the demo resource's change feed (库表共享)
)  # + one request topic per provider
HTTP_SCALED_ON_CPU = ("gateway", "registry", "console")
LAG_SCALED = ("exchange", "audit", "connector")

Obj = dict[str, Any]


def renderer() -> list[str]:
    if (kubectl := shutil.which("kubectl")) is not None:
        return [kubectl, "kustomize"]
    if (built := ROOT / "var" / "bin" / "kustomize").exists():
        return [str(built), "build"]
    pytest.fail("kustomize is needed to render deploy/k8s: install kubectl, or run `make kustomize`")


def render(overlay: str) -> list[Obj]:
    out = subprocess.run(
        [*renderer(), str(K8S / "overlays" / overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


@pytest.fixture(scope="module")
def prod() -> list[Obj]:
    return render("prod")


@pytest.fixture(scope="module")
def dev() -> list[Obj]:
    return render("dev")


def group_of(obj: Obj) -> str:
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


# --------------------------------------------------------------------------- schemas


def strict(schema: Any) -> Any:
    """A CRD schema where an object with declared properties refuses undeclared ones (what the API
    server's strict field validation does; a structural schema alone would silently prune them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str, str], Obj]:
    """(group, version, kind) → strict openAPIV3Schema, from every vendored CRD."""
    schemas = {}
    for path in sorted(CRDS.glob("*/*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        for version in spec["versions"]:
            schemas[spec["group"], version["name"], spec["names"]["kind"]] = strict(
                version["schema"]["openAPIV3Schema"]
            )
    return schemas


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str, str], Obj]:
    return crd_schemas()


def crd_errors(obj: Obj, schemas: dict[tuple[str, str, str], Obj]) -> list[str]:
    group, version = obj["apiVersion"].split("/")
    schema = schemas[group, version, obj["kind"]]
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]


def test_vendored_crds_match_their_recorded_checksums() -> None:
    recorded = dict(
        reversed(line.split(maxsplit=1)) for line in (CRDS / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    files = {str(p.relative_to(CRDS)) for p in CRDS.glob("*/*.yaml")}
    assert set(recorded) == files
    for name, digest in recorded.items():
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == digest, name


def test_builtin_objects_are_valid_kubernetes_in_strict_mode(objects: list[Obj]) -> None:
    builtin = [o for o in objects if "." not in group_of(o) or group_of(o).endswith(".k8s.io")]
    assert len(builtin) > 30
    for obj in builtin:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field(prod: list[Obj]) -> None:
    deployment = copy.deepcopy(named(prod, "Deployment", "tongban-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_custom_resources_are_valid_against_their_crds(
    objects: list[Obj], schemas: dict[tuple[str, str, str], Obj]
) -> None:
    custom = [o for o in objects if "." in group_of(o) and not group_of(o).endswith(".k8s.io")]
    assert {o["kind"] for o in custom} == CUSTOM_KINDS
    for obj in custom:
        assert crd_errors(obj, schemas) == [], (obj["kind"], obj["metadata"]["name"])


def test_crd_validation_refuses_unknown_and_mistyped_fields(
    prod: list[Obj], schemas: dict[tuple[str, str, str], Obj]
) -> None:
    cluster = copy.deepcopy(named(prod, "Cluster", "tongban-pg"))
    cluster["spec"]["instance"] = 3
    cluster["spec"]["instances"] = "three"
    errors = crd_errors(cluster, schemas)
    assert any("instance" in e and "unexpected" in e for e in errors), errors
    assert any(e.startswith("spec/instances") for e in errors), errors
    user = copy.deepcopy(named(prod, "KafkaUser", "tongban-exchange"))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    assert any("Reed" in e for e in crd_errors(user, schemas))


# --------------------------------------------------------------------------- policies


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]["spec"]


def policy_violations(objects: list[Obj]) -> list[str]:
    """What a reviewer would refuse: mutable or missing image tags, missing probes or resources,
    anything short of the restricted security context, Secrets with values in the repository."""
    found = []
    for obj, spec in pod_specs(objects):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        pod = spec.get("securityContext", {})
        if not pod.get("runAsNonRoot") or pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            found.append(f"{where}: pod must run as non-root with seccomp RuntimeDefault")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            found.append(f"{where}: host namespaces")
        for c in spec.get("initContainers", []) + spec["containers"]:
            image = c["image"]
            name_part = image.split("@")[0].rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in name_part or name_part.endswith(":latest")):
                found.append(f"{where}: image {image} must be pinned by digest or by a tag other than latest")
            sc = c.get("securityContext", {})
            if (
                sc.get("privileged")
                or sc.get("allowPrivilegeEscalation") is not False
                or sc.get("readOnlyRootFilesystem") is not True
                or sc.get("capabilities", {}).get("drop") != ["ALL"]
                or sc.get("capabilities", {}).get("add")
            ):
                found.append(f"{where}: container {c['name']} lacks the restricted security context")
            res = c.get("resources", {})
            if not (
                res.get("requests", {}).keys() >= {"cpu", "memory"}
                and res.get("limits", {}).keys() >= {"cpu", "memory"}
            ):
                found.append(f"{where}: container {c['name']} needs cpu and memory requests and limits")
            if obj["kind"] == "Deployment" and not (
                c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
                and c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
            ):
                found.append(f"{where}: container {c['name']} needs probes on /readyz and /healthz")
    for secret in of_kind(objects, "Secret"):
        if secret.get("data") or secret.get("stringData"):
            found.append(f"Secret/{secret['metadata']['name']}: secret values are never committed")
    return found


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def coverage_gaps(objects: list[Obj]) -> list[str]:
    """Deployments without a PodDisruptionBudget, or without a NetworkPolicy of their own that
    admits something (the namespace's default deny, with an empty selector, does not count)."""
    gaps = []
    for d in of_kind(objects, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(selects(p["spec"]["selector"], labels) for p in of_kind(objects, "PodDisruptionBudget")):
            gaps.append(f"Deployment/{d['metadata']['name']}: no PodDisruptionBudget")
        if not any(
            n["spec"]["podSelector"] and selects(n["spec"]["podSelector"], labels) and n["spec"].get("ingress")
            for n in of_kind(objects, "NetworkPolicy")
        ):
            gaps.append(f"Deployment/{d['metadata']['name']}: no NetworkPolicy admits its traffic")
    return gaps


def test_policies_hold(objects: list[Obj]) -> None:
    assert policy_violations(objects) == []
    assert coverage_gaps(objects) == []


def test_policy_checks_catch_what_they_check(prod: list[Obj]) -> None:
    bad = copy.deepcopy(prod)
    gateway = named(bad, "Deployment", "tongban-gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "tongban:latest"
    container["securityContext"]["privileged"] = True
    del container["readinessProbe"]
    bad.remove(named(bad, "PodDisruptionBudget", "tongban-registry"))
    bad.remove(named(bad, "NetworkPolicy", "tongban-audit-ingress"))
    bad.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oops"}, "stringData": {"k": "v"}})
    violations = policy_violations(bad)
    assert any("tongban:latest" in v for v in violations)
    assert any("restricted security context" in v for v in violations)
    assert any("probes" in v for v in violations)
    assert any("Secret/oops" in v for v in violations)
    assert sorted(coverage_gaps(bad)) == [
        "Deployment/tongban-audit: no NetworkPolicy admits its traffic",
        "Deployment/tongban-registry: no PodDisruptionBudget",
    ]


def test_one_deployment_per_service_from_one_image_with_the_config_map(objects: list[Obj]) -> None:
    deployments = of_kind(objects, "Deployment")
    components = sorted(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments)
    assert components == sorted(SERVICES)
    images = {c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    assert len(images) == 1
    for d in deployments:
        (c,) = d["spec"]["template"]["spec"]["containers"]
        component = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        assert c["command"] == ["python", "-m", f"services.{component}"]
        assert c["envFrom"] == [{"configMapRef": {"name": "tongban-config"}}]
        # Secrets only by reference: no env value may carry one.
        for env in c["env"]:
            assert "value" not in env or env["name"] not in {
                "TONGBAN_SUBJECT_HASH_KEY",
                "TONGBAN_BOOTSTRAP_ADMIN_PASSWORD",
                "TONGBAN_KEY_ENCRYPTION_KEY",
            }
    job = named(objects, "Job", "tongban-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "services.common.migrate"]


def test_every_service_that_seals_a_key_reads_the_kek_from_the_secret(objects: list[Obj]) -> None:
    """The services keeping private keys sealed (services.common.keywrap) do not start without the
    key-encryption key: their Deployment takes it from the Secret, by reference."""
    kek = {"secretKeyRef": {"name": "tongban-secrets", "key": "key-encryption-key"}}
    readers = set()
    for d in of_kind(objects, "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        if {"name": "TONGBAN_KEY_ENCRYPTION_KEY", "valueFrom": kek} in c["env"]:
            readers.add(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])
    assert readers == {"gateway", "exchange", "audit", "connector", "console"}


def settings_read_from_environment() -> set[str]:
    """Every TONGBAN_* variable some service's settings read (a typo in the ConfigMap is ignored silently)."""
    from pydantic_settings import BaseSettings

    names: set[str] = set()
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.config")
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, BaseSettings):
                for field, info in cls.model_fields.items():
                    alias = info.validation_alias
                    names.add(alias if isinstance(alias, str) else f"TONGBAN_{field.upper()}")
    return names


def test_config_map_sets_only_settings_the_services_read(objects: list[Obj]) -> None:
    known = settings_read_from_environment()
    assert "TONGBAN_CONNECTOR_DEPT" in known and "TONGBAN_DATABASE_URL" in known
    assert set(named(objects, "ConfigMap", "tongban-config")["data"]) <= known
    for d in of_kind(objects, "Deployment"):
        assert {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]} - known <= {
            "TONGBAN_DATABASE_PASSWORD"  # only spelled into TONGBAN_DATABASE_URL (the console has no database)
        }


def test_scaling_http_services_on_cpu_and_consumers_on_lag(objects: list[Obj]) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert hpas == {f"tongban-{s}" for s in HTTP_SCALED_ON_CPU}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject")}
    assert {n.removeprefix("tongban-").split("-")[0] for n in scaled} == set(LAG_SCALED)
    for so in scaled.values():
        (kafka,) = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        assert kafka["metadata"]["consumerGroup"].startswith("tongban.")
        assert kafka["authenticationRef"]["name"] == "tongban-keda-kafka"
    # KEDA owns its own HPA: a Deployment scaled by both would be fought over.
    assert not hpas & set(scaled)


def test_kafka_is_three_brokers_rf3_min_isr2_with_every_topic_retained_for_a_stated_time(prod: list[Obj]) -> None:
    (pool,) = of_kind(prod, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3 and sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    kafka = named(prod, "Kafka", "tongban-kafka")
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(prod, "KafkaTopic")}
    assert {f"tongban.{t}" for t in TOPICS} <= set(topics)
    assert any(name.startswith("tongban.exchange.requests.") for name in topics)
    for spec in topics.values():
        assert spec["replicas"] == 3 and spec["config"]["min.insync.replicas"] == 2
        assert spec["config"]["retention.ms"] > 0


def test_each_connector_reads_only_its_own_departments_requests(objects: list[Obj]) -> None:
    connectors = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"].startswith("tongban-connector-")]
    assert connectors
    users = {u["metadata"]["name"]: u for u in of_kind(objects, "KafkaUser")}
    for d in connectors:
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        dept = env["TONGBAN_CONNECTOR_DEPT"]
        user_secret = next(
            v["secret"]["secretName"] for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-user"
        )
        acls = users[user_secret]["spec"]["authorization"]["acls"]
        readable = [a["resource"] for a in acls if a["resource"]["type"] == "topic" and "Read" in a["operations"]]
        assert readable == [{"type": "topic", "name": f"tongban.exchange.requests.{dept}", "patternType": "literal"}]
    # Nobody else may read any department's requests either.
    for name, user in users.items():
        if name.startswith("tongban-connector-"):
            continue
        for acl in user["spec"]["authorization"]["acls"]:
            if acl["resource"]["type"] == "topic" and acl["resource"]["name"].startswith("tongban.exchange.requests"):
                assert "Read" not in acl["operations"], name


def test_postgresql_is_three_instances_synchronous_backed_up_and_pooled(prod: list[Obj]) -> None:
    cluster = named(prod, "Cluster", "tongban-pg")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["spec"]["backup"]["barmanObjectStore"]["s3Credentials"]["accessKeyId"]["name"] == "tongban-pg-backup"
    (pooler,) = of_kind(prod, "Pooler")
    assert pooler["spec"]["cluster"]["name"] == "tongban-pg" and pooler["spec"]["type"] == "rw"


def test_dev_is_single_replicas(dev: list[Obj]) -> None:
    assert {d["spec"]["replicas"] for d in of_kind(dev, "Deployment")} == {1}
    assert of_kind(dev, "KafkaNodePool")[0]["spec"]["replicas"] == 1
    assert named(dev, "Cluster", "tongban-pg")["spec"]["instances"] == 1


def test_only_the_gateway_is_exposed_with_tls(objects: list[Obj]) -> None:
    (ingress,) = of_kind(objects, "Ingress")
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"tongban-gateway"}
    assert ingress["spec"]["tls"]
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"]
        == "true"
    )
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in of_kind(objects, "Service"))
    (deny,) = [n for n in of_kind(objects, "NetworkPolicy") if n["metadata"]["name"] == "default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # Only the gateway admits the ingress controller.
    admitting = [
        n["spec"]["podSelector"]
        for n in of_kind(objects, "NetworkPolicy")
        for rule in n["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "ingress-nginx"
    ]
    assert admitting == [{"matchLabels": {"app.kubernetes.io/name": "tongban-gateway"}}]


def test_prometheus_rule_is_generated_from_the_alert_rules(objects: list[Obj]) -> None:
    spec = importlib.util.spec_from_file_location("prometheusrule", K8S / "prometheusrule.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8") == module.render(), (
        "run `make manifests` to regenerate deploy/k8s/base/prometheusrule.yaml"
    )
    source = yaml.safe_load((ROOT / "deploy" / "monitoring" / "tongban-alerts.yml").read_text(encoding="utf-8"))
    assert named(objects, "PrometheusRule", "tongban-alerts")["spec"]["groups"] == source["groups"]
