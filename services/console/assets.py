"""``python -m services.console.assets``: fetch the console's vendored files (htmx, Pico CSS,
Apache ECharts) into ``static/vendor/``, and the tests' (axe-core) into ``var/test-vendor/``, each
checked against ``assets.toml`` — the one record of their versions, sources, licences and checksums. Run by ``make assets`` (and so by ``make run`` and
``make test``) when a file is missing; a file already there is checked, not fetched again.

The files are not committed: they are third-party builds, pinned and checksummed here, and the
record says exactly which bytes the console serves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).parent
RECORD = HERE / "assets.toml"
VENDOR = HERE / "static" / "vendor"
# Files only the tests use (``served = false``): outside static/, so the console never serves them.
TEST_VENDOR = HERE.parents[1] / "var" / "test-vendor"


@dataclass(frozen=True)
class VendoredFile:
    member: str  # path inside the package's tarball
    name: str  # file name under static/vendor/
    sha256: str


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    integrity: str  # the registry's SRI string of the tarball (sha512-…)
    files: tuple[VendoredFile, ...]
    served: bool = True  # False: for the tests only, kept out of static/

    @property
    def vendor(self) -> Path:
        return VENDOR if self.served else TEST_VENDOR

    def tarball_path(self) -> str:
        """The tarball's path on an npm registry: ``<name>/-/<unscoped name>-<version>.tgz``."""
        return f"{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


def packages() -> list[Package]:
    record = tomllib.loads(RECORD.read_text())
    return [
        Package(
            name=p["package"],
            version=p["version"],
            licence=p["licence"],
            integrity=p["integrity"],
            files=tuple(VendoredFile(f["from"], f["to"], f["sha256"]) for f in p["files"]),
            served=p.get("served", True),
        )
        for p in record.values()
    ]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing_assets(*, served_only: bool = False) -> list[str]:
    """The vendored files that are absent or not the recorded bytes (``served_only``: of those the
    console serves, not the tests' own)."""
    return [
        f.name
        for p in packages()
        if p.served or not served_only
        for f in p.files
        if not (p.vendor / f.name).is_file() or sha256_of((p.vendor / f.name).read_bytes()) != f.sha256
    ]


def registry_address() -> str:
    """The npm registry to fetch from: NPM_CONFIG_REGISTRY, else the one npm is configured with."""
    address = os.environ.get("NPM_CONFIG_REGISTRY", "")
    if not address and (npm := shutil.which("npm")):
        asked = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, check=False)  # noqa: S603 (npm from the PATH, fixed arguments)
        address = asked.stdout
    address = address.strip().rstrip("/")
    if not address.startswith(("https://", "http://")):
        raise SystemExit("Set NPM_CONFIG_REGISTRY to the address of an npm registry (or install npm), then retry.")
    return address


def check_integrity(package: Package, tarball: bytes) -> None:
    algorithm, _, expected = package.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{package.name}@{package.version}: the tarball is not the recorded one ({algorithm})")


def fetch(package: Package, registry: str) -> None:
    vendor = package.vendor
    url = f"{registry}/{package.tarball_path()}"
    answer = httpx.get(url, follow_redirects=True, timeout=120)
    answer.raise_for_status()
    check_integrity(package, answer.content)
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        for f in package.files:
            member = tar.extractfile(f.member)
            if member is None:
                raise SystemExit(f"{package.name}@{package.version}: {f.member} is not a file in the tarball")
            data = member.read()
            if sha256_of(data) != f.sha256:
                raise SystemExit(f"{package.name}@{package.version}: {f.member} does not have the recorded SHA-256")
            (vendor / f.name).write_bytes(data)
    print(f"assets: {package.name}@{package.version} ({package.licence}) → {vendor.relative_to(HERE.parents[1])}")


def main(argv: list[str]) -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    TEST_VENDOR.mkdir(parents=True, exist_ok=True)
    missing = set(missing_assets())
    wanted = [p for p in packages() if "--print-sha256" in argv or any(f.name in missing for f in p.files)]
    if not wanted:
        return 0
    registry = registry_address()
    for package in wanted:
        if "--print-sha256" in argv:
            answer = httpx.get(f"{registry}/{package.tarball_path()}", follow_redirects=True, timeout=120)
            with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
                for f in package.files:
                    member = tar.extractfile(f.member)
                    print(package.name, f.member, sha256_of(member.read()) if member else "absent")
        else:
            fetch(package, registry)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
