"""The container image (镜像), built and checked without a container registry.

    python deploy/image.py build    Debian base (mmdebstrap, cached under var/image) → podman → the image
    python deploy/image.py check    build, inspect it, then run the gateway in it until /healthz answers

Registries of container images cannot be reached from where this runs, Debian's packages can: the
base is a minimal Debian (python3 from the suite, 3.11 in bookworm) made by ``mmdebstrap`` into
``var/image/``, imported into podman, and given to the ``Containerfile`` as ``--build-arg BASE``.
Elsewhere ``podman build .`` on the default ``python:3.11-slim`` builds the same image.

``check`` runs the gateway as the Deployments do (uid 10001, read-only root filesystem, every
capability dropped) against the PostgreSQL and Kafka of ``make infra-up`` (host network, the
PostgreSQL socket bind-mounted), in a database of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "var" / "image"
SUITE = "bookworm"  # Debian 12: python3 is 3.11, the version the lock is made for
# What the base needs beyond minbase: the interpreter, venv (the Containerfile makes one), CAs.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_TAG = f"localhost/tongban-base:{SUITE}"
IMAGE = "localhost/tongban"
SMOKE_DATABASE = "tongban_image_check"
SMOKE_CONTAINER = "tongban-image-check"
HEALTH_TIMEOUT_S = 90.0
# Development tools and installers: never in the image.
DEV_ONLY = ("pytest", "mypy", "ruff", "hypothesis", "schemathesis", "pip", "setuptools")


def say(message: str) -> None:
    print(f"image: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"image: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        fail(f"{tool} is needed: apt-get install {package}")
    return path


def container_flags() -> list[str]:
    """What ``podman run``/``build`` need on this host. Limits no higher than this process has (a
    container may not raise them without CAP_SYS_RESOURCE, and podman's defaults do); runc where
    the cgroup hierarchy is hybrid (v1 controllers plus a v2 mount), which crun refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    flags = ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]
    if Path("/sys/fs/cgroup/unified").is_dir() and shutil.which("runc"):
        flags[:0] = ["--runtime", "runc"]
    return flags


def run(*args: str, capture: bool = False) -> str:
    done = subprocess.run(args, check=False, capture_output=capture, text=True)
    if done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:] if capture else ""
        fail(f"failed ({done.returncode}): {' '.join(args)}\n{detail}")
    return done.stdout if capture else ""


def base_tarball() -> Path:
    """The Debian root filesystem, made once per suite and package list (the name says which)."""
    tarball = CACHE / f"debian-{SUITE}-{'-'.join(BASE_PACKAGES)}.tar"
    if tarball.exists():
        return tarball
    mmdebstrap = need("mmdebstrap", "mmdebstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    say(f"building the Debian {SUITE} base with mmdebstrap (first run only, about a minute)")
    run(
        mmdebstrap,
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        # Documentation and translations are never read in a container.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        SUITE,
        str(partial),
    )
    partial.rename(tarball)
    return tarball


def base_image() -> str:
    podman = need("podman", "podman")
    tarball = base_tarball()
    stamp = CACHE / "base.imported"
    present = subprocess.run([podman, "image", "exists", BASE_TAG], check=False).returncode == 0
    if present and stamp.exists() and stamp.read_text() == tarball.name:
        return BASE_TAG
    say(f"importing {tarball.name} as {BASE_TAG}")
    run(
        podman,
        "import",
        "--quiet",
        "--change",
        "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV=LANG=C.UTF-8",
        str(tarball),
        BASE_TAG,
        capture=True,
    )
    stamp.write_text(tarball.name)
    return BASE_TAG


def ca_bundle() -> str | None:
    """The CA bundle this host trusts, for pip inside the build (a TLS-inspecting proxy's CA is in
    it, not in Debian's): the one pip is told to use, else OpenSSL's default."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build() -> str:
    podman = need("podman", "podman")
    base = base_image()
    tag = f"{IMAGE}:{version()}"
    args = [podman, "build", *container_flags(), "--network=host", "--build-arg", f"BASE={base}"]
    args += ["--build-arg", f"VERSION={version()}", "--tag", tag, "--file", str(ROOT / "Containerfile")]
    if (bundle := ca_bundle()) is not None:
        args += ["--secret", f"id=ca-bundle,src={bundle}"]
    started = time.monotonic()
    run(*args, str(ROOT))
    say(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def inspect(tag: str) -> dict[str, Any]:
    podman = need("podman", "podman")
    [image] = json.loads(run(podman, "image", "inspect", tag, capture=True))
    return dict(image)


def check_config(tag: str) -> None:
    """What the Deployments rely on, and what must not be in the image."""
    image = inspect(tag)
    config = image["Config"]
    problems = []
    if config.get("User") != "10001:10001":
        problems.append(f"user is {config.get('User')!r}, not 10001:10001")
    if config.get("Entrypoint") != ["python", "-m"] or config.get("Cmd") != ["services.gateway"]:
        problems.append(f"entrypoint {config.get('Entrypoint')} cmd {config.get('Cmd')}")
    labels = config.get("Labels") or {}
    if labels.get("org.opencontainers.image.version") != version():
        problems.append(f"version label {labels.get('org.opencontainers.image.version')!r}, not {version()}")
    secretish = [
        e.split("=", 1)[0]
        for e in config.get("Env", [])
        if any(w in e.split("=", 1)[0] for w in ("KEY", "PASSWORD", "SECRET", "TOKEN"))
    ]
    if secretish:
        problems.append(f"secrets in the environment: {secretish}")
    podman = need("podman", "podman")
    probe = (
        "import importlib.util, os, sys; "
        f"dev = [m for m in {DEV_ONLY!r} if importlib.util.find_spec(m)]; "
        "leaked = [p for p in ('/run/secrets/ca-bundle',) if os.path.exists(p)]; "
        "print(os.getuid(), sys.version_info[:2] >= (3, 11), dev, leaked)"
    )
    out = run(
        podman,
        "run",
        "--rm",
        *container_flags(),
        "--network=none",
        "--entrypoint",
        "python",
        tag,
        "-c",
        probe,
        capture=True,
    )
    if out.strip() != "10001 True [] []":
        problems.append(f"inside the image (uid, python>=3.11, dev tools, leaked build secrets): {out.strip()}")
    if problems:
        fail("the image is not as the Deployments expect:\n  " + "\n  ".join(problems))
    say(f"{tag}: user 10001, entrypoint python -m, labels, no dev tools, no secrets; {image['Size'] / 1e6:.0f} MB")


async def fresh_database(url: str) -> None:
    import asyncpg  # the venv's; this module runs before it only for `build`

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{SMOKE_DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{SMOKE_DATABASE}"')
    finally:
        await conn.close()


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a loopback URL we built)
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def wait_healthy(podman: str, container: str, url: str) -> float:
    """Seconds until ``url`` answers 200; fails with the container's log if it stops first."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTH_TIMEOUT_S:
        if http_status(url) == 200:
            return time.monotonic() - started
        state = run(podman, "inspect", "--format", "{{.State.Status}}", container, capture=True).strip()
        if state != "running":
            logs = subprocess.run([podman, "logs", container], check=False, capture_output=True, text=True)
            fail(f"the container {container} is {state}:\n{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.5)
    fail(f"{url} did not answer within {HEALTH_TIMEOUT_S:.0f} s")


def smoke(tag: str) -> None:
    """The gateway and the console in the image, as the Deployments run them: until /healthz and
    /readyz answer 200, and the console's login page with its vendored assets through the gateway."""
    database_url = os.environ.get("TONGBAN_DATABASE_URL")
    kafka = os.environ.get("TONGBAN_KAFKA_BOOTSTRAP")
    if not database_url or not kafka:
        fail("needs the local infrastructure: make infra-up (var/infra.env)")
    socket_dir = parse_qs(urlsplit(database_url).query).get("host", [""])[0]
    socket_file = Path(socket_dir) / ".s.PGSQL.5432"
    if not socket_file.exists():
        fail(f"no PostgreSQL socket at {socket_file}")
    asyncio.run(fresh_database(database_url))
    sys.path.insert(0, str(ROOT / "deploy" / "local"))
    sys.path.insert(0, str(ROOT))
    from infra import free_port  # the same port choice as the local stack, below the ephemeral range

    from services.common.keywrap import new_kek

    # The gateway seals its keys, and the console its cookies, under the platform KEK: a throwaway
    # one, handed over by name (`--env NAME` copies it from podman's environment), so no command
    # line shows it.
    os.environ["TONGBAN_KEY_ENCRYPTION_KEY"] = new_kek()

    port, console_port = free_port(), free_port()
    podman = need("podman", "podman")
    containers = (SMOKE_CONTAINER, f"{SMOKE_CONTAINER}-console")
    common = [*container_flags(), "--network=host", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    common += ["--env", "TONGBAN_KEY_ENCRYPTION_KEY", "--env", "TONGBAN_HOST=127.0.0.1"]
    common += ["--env", f"TONGBAN_GATEWAY_URL=http://127.0.0.1:{port}"]
    common += ["--env", f"TONGBAN_CONSOLE_URL=http://127.0.0.1:{console_port}"]
    for container in containers:
        subprocess.run([podman, "rm", "--force", "--ignore", container], check=False, capture_output=True)
    try:
        run(
            podman,
            "run",
            "--detach",
            "--name",
            containers[0],
            *common,
            # Only the socket, not its 0700 directory: the container's user is not PostgreSQL's.
            "--volume",
            f"{socket_file}:/run/pg/.s.PGSQL.5432",
            "--env",
            f"TONGBAN_DATABASE_URL=postgresql+asyncpg://postgres@/{SMOKE_DATABASE}?host=/run/pg",
            "--env",
            f"TONGBAN_KAFKA_BOOTSTRAP={kafka}",
            "--env",
            f"TONGBAN_GATEWAY_PORT={port}",
            tag,
            "services.gateway",
            capture=True,
        )
        healthy_after = wait_healthy(podman, containers[0], f"http://127.0.0.1:{port}/healthz")
        ready = http_status(f"http://127.0.0.1:{port}/readyz")
        if ready != 200:
            fail(f"/healthz answered but /readyz is {ready}")
        say(
            f"gateway in {tag}: /healthz 200 after {healthy_after:.1f} s, /readyz 200 (read-only root, uid 10001, no capabilities)"
        )
        run(
            podman,
            "run",
            "--detach",
            "--name",
            containers[1],
            *common,
            "--env",
            f"TONGBAN_CONSOLE_PORT={console_port}",
            tag,
            "services.console",
            capture=True,
        )
        console_after = wait_healthy(podman, containers[1], f"http://127.0.0.1:{console_port}/readyz")
        for path in ("/console/login", "/console/static/vendor/htmx.min.js", "/console/static/vendor/pico.min.css"):
            if (status := http_status(f"http://127.0.0.1:{port}{path}")) != 200:
                fail(f"{path} through the gateway is {status}")
        # In Chinese: the image kept Babel's zh data and the compiled catalogue.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/login", timeout=2) as response:
            if "登录" not in response.read().decode():
                fail("the console's login page in the image is not in Chinese")
        say(
            f"console in {tag}: /readyz 200 after {console_after:.1f} s; its login page (in Chinese) and vendored assets "
            "through the gateway"
        )
    finally:
        for container in containers:
            subprocess.run([podman, "rm", "--force", "--ignore", container], check=False, capture_output=True)


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "build"
    if command == "build":
        build()
    elif command == "check":
        tag = build()
        check_config(tag)
        smoke(tag)
    else:
        fail(f"unknown command {command!r}: build | check")


if __name__ == "__main__":
    main(sys.argv)
