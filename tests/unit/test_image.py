"""The container image's inputs, checked offline (``make image-test`` builds and runs the image).

The image installs ``requirements-runtime.lock``: the runtime part of ``requirements.lock``, which
``make lock`` writes from the same resolution. Here: it is exactly that — every package pinned to
the same version with the same hashes, every runtime dependency present, no development tool.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name → (version, hashes) of a ``uv pip compile --generate-hashes`` file."""
    found: dict[str, tuple[str, set[str]]] = {}
    current: str | None = None
    for line in lock.read_text().splitlines():
        if match := REQUIREMENT.match(line):
            current = canonical(match[1])
            assert current not in found, f"{lock.name}: {current} pinned twice"
            found[current] = (match[2], set())
        elif current is not None and (digest := HASH.search(line)):
            found[current][1].add(digest[1])
    return {name: (version, frozenset(hashes)) for name, (version, hashes) in found.items()}


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_runtime_lock_is_the_runtime_part_of_the_lock() -> None:
    full, runtime = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-runtime.lock")
    assert runtime, "requirements-runtime.lock pins nothing"
    for name, (version, hashes) in runtime.items():
        assert hashes, f"{name} has no hash in requirements-runtime.lock"
        assert name in full, f"{name} is in requirements-runtime.lock but not in requirements.lock (run make lock)"
        assert (version, hashes) == full[name], (
            f"{name}: not the version and hashes of requirements.lock (run make lock)"
        )


def test_runtime_lock_has_every_dependency_and_no_development_tool() -> None:
    runtime = pins(ROOT / "requirements-runtime.lock")
    project = pyproject()
    dependencies = project["project"]["dependencies"]  # type: ignore[index]
    development = project["dependency-groups"]["dev"]  # type: ignore[index]
    for requirement in dependencies:
        name = canonical(re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0])
        assert name in runtime, f"dependency {name} is missing from requirements-runtime.lock (run make lock)"
    for requirement in development:
        name = canonical(re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0])
        assert name not in runtime, f"development tool {name} would be installed in the image"


def test_containerfile_base_and_user_match_the_deployments() -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", containerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", containerfile, re.MULTILINE)
    assert users == ["10001:10001"], users
    # The image runs as the user the Deployments and the migrations Job demand.
    for manifest in (ROOT / "deploy" / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec")
            if pod and "securityContext" in pod:
                context = pod["securityContext"]
                assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001), manifest.name


def test_build_context_leaves_out_local_state() -> None:
    ignore = (ROOT / ".containerignore").read_text().splitlines()
    # Everything is excluded, then only what the image needs is let back in.
    assert "*" in ignore
    allowed = sorted(line[1:] for line in ignore if line.startswith("!"))
    assert allowed == ["requirements-runtime.lock", "services"]
