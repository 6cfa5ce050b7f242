"""The Spark engine's cluster: start, stop and inspect a standalone Spark cluster on 127.0.0.1.

``up`` starts, from the venv's pyspark (no separate Spark download), one master, the
workers and the Thrift server (HiveServer2 protocol) that dbt and ``thrift_connection`` talk
to; ``down`` stops them; ``status`` says what runs and answers. pyspark's wheel has
``bin/spark-class`` and ``bin/spark-submit`` but not ``sbin/start-master.sh`` and friends, so
the processes are started here, detached, with their pids in ``<spark dir>/run/*.pid``.

Reads the settings SLUICE_DATA_DIR (everything lives in ``<data dir>/spark``: ``conf/``,
``metastore_db/``, ``warehouse/``, ``logs/``, ``run/``, ``work/``), SLUICE_SPARK_MASTER_PORT,
SLUICE_SPARK_UI_PORT, SLUICE_SPARK_THRIFT_PORT, SLUICE_SPARK_WORKERS,
SLUICE_SPARK_WORKER_CORES, SLUICE_SPARK_WORKER_MEMORY and SLUICE_SPARK_DRIVER_MEMORY; and from
the environment JAVA_HOME (else the ``java`` on PATH).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import Settings

HOST = "127.0.0.1"
# A cold start of master, workers and Thrift server takes 15-30 s on two cores.
UP_TIMEOUT_SECONDS = 120.0
DOWN_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.5

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
THRIFT_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"

JAVA_MISSING = (
    "the Spark engine (SLUICE_WAREHOUSE_ENGINE=spark) needs Java 17, and there is no JAVA_HOME "
    "and no `java` on PATH: install it with `apt-get install openjdk-17-jre-headless` (or set "
    "JAVA_HOME to a Java 17)"
)
PYSPARK_MISSING = (
    "the Spark engine (SLUICE_WAREHOUSE_ENGINE=spark) needs pyspark, which is not installed "
    "in this Python: run `pip install -e '.[spark]'`"
)


class SparkError(RuntimeError):
    """The cluster cannot start, or did not come up; the message says what to do."""


@dataclass(frozen=True)
class ProcessStatus:
    """One JVM of the cluster, as its pid file says."""

    name: str
    pid: int | None
    alive: bool
    log: Path


@dataclass(frozen=True)
class ClusterStatus:
    master: ProcessStatus
    workers: tuple[ProcessStatus, ...]
    thrift: ProcessStatus
    # Workers the master lists as ALIVE (None: its web UI did not answer).
    workers_alive: int | None
    workers_expected: int
    thrift_answering: bool
    master_url: str
    ui_url: str
    thrift_url: str

    @property
    def processes(self) -> tuple[ProcessStatus, ...]:
        return (self.master, *self.workers, self.thrift)

    @property
    def up(self) -> bool:
        return (
            all(process.alive for process in self.processes)
            and self.workers_alive == self.workers_expected
            and self.thrift_answering
        )

    @property
    def any_running(self) -> bool:
        return any(process.alive for process in self.processes)


@dataclass(frozen=True)
class _Process:
    """What to start: a name (its pid and log file), the main class (to recognise the pid)
    and the command after SPARK_HOME/bin/."""

    name: str
    main_class: str
    command: tuple[str, ...]


def private_cluster_environment(workers: int) -> dict[str, str]:
    """The SLUICE_SPARK_* variables of a small cluster beside any other on this machine (the
    tests' and the benchmarks'): ports that were free a moment ago, ``workers`` workers of
    1 core and 1 GB, a driver of 1 GB. Fresh ports for each cluster: a stopped one's may
    linger in TIME_WAIT."""
    sockets = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        master, ui, thrift = (int(sock.getsockname()[1]) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    return {
        "SLUICE_WAREHOUSE_ENGINE": "spark",
        "SLUICE_SPARK_MASTER_PORT": str(master),
        "SLUICE_SPARK_UI_PORT": str(ui),
        "SLUICE_SPARK_THRIFT_PORT": str(thrift),
        "SLUICE_SPARK_WORKERS": str(workers),
        "SLUICE_SPARK_WORKER_CORES": "1",
        "SLUICE_SPARK_WORKER_MEMORY": "1g",
        "SLUICE_SPARK_DRIVER_MEMORY": "1g",
    }


def cluster_url(settings: Settings) -> str:
    """The master's URL, for ``--master`` of spark-submit or a SparkSession."""
    return f"spark://{HOST}:{settings.spark_master_port}"


def ui_url(settings: Settings) -> str:
    return f"http://{HOST}:{settings.spark_ui_port}"


def thrift_connection(settings: Settings, timeout_seconds: float | None = None) -> Any:
    """A PyHive connection to the cluster's Thrift server (a DB-API connection; close it).

    With ``timeout_seconds``, every socket read gives up after that long (for probes; a long
    query would fail)."""
    from pyhive import hive

    if timeout_seconds is None:
        return hive.connect(host=HOST, port=settings.spark_thrift_port)
    # hive.connect has no timeout: build its SASL transport (auth NONE = PLAIN with any
    # password) over a socket that has one.
    import thrift_sasl
    from thrift.transport.TSocket import TSocket

    sock = TSocket(HOST, settings.spark_thrift_port)
    sock.setTimeout(timeout_seconds * 1000)
    transport = thrift_sasl.TSaslClientTransport(
        lambda: hive.get_installed_sasl(
            host=HOST, sasl_auth="PLAIN", service=None, username="sluice", password="x"
        ),
        "PLAIN",
        sock,
    )
    return hive.connect(thrift_transport=transport, username="sluice")


def spark_home() -> Path:
    """pyspark's folder, which holds bin/spark-class, bin/spark-submit and the jars."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SparkError(PYSPARK_MISSING)
    return Path(spec.origin).parent


def java_home(env: Mapping[str, str] | None = None) -> Path:
    """JAVA_HOME, else the Java home of the ``java`` on PATH (symlinks followed)."""
    env = os.environ if env is None else env
    if env.get("JAVA_HOME"):
        home = Path(env["JAVA_HOME"])
        if not (home / "bin" / "java").exists():
            raise SparkError(
                f"JAVA_HOME={home} has no bin/java; point it at a Java 17 or unset it to use "
                "the `java` on PATH"
            )
        return home
    java = shutil.which("java", path=env.get("PATH", ""))
    if java is None:
        raise SparkError(JAVA_MISSING)
    return Path(java).resolve().parent.parent


def _dirs(settings: Settings) -> dict[str, Path]:
    spark_dir = settings.spark_dir
    return {
        "conf": spark_dir / "conf",
        "logs": spark_dir / "logs",
        "run": spark_dir / "run",
        "work": spark_dir / "work",
        "tmp": spark_dir / "tmp",
    }


def _processes(settings: Settings) -> tuple[_Process, list[_Process], _Process]:
    master = _Process(
        "master",
        MASTER_CLASS,
        (
            "spark-class",
            MASTER_CLASS,
            "--host",
            HOST,
            "--port",
            str(settings.spark_master_port),
            "--webui-port",
            str(settings.spark_ui_port),
        ),
    )
    workers = [
        _Process(
            f"worker-{number}",
            WORKER_CLASS,
            (
                "spark-class",
                WORKER_CLASS,
                "--host",
                HOST,
                # Port 0: any free one; the master and executors learn it on registration.
                "--port",
                "0",
                "--webui-port",
                "0",
                "--cores",
                str(settings.spark_worker_cores),
                "--memory",
                settings.spark_worker_memory,
                "--work-dir",
                str(_dirs(settings)["work"] / f"worker-{number}"),
                cluster_url(settings),
            ),
        )
        for number in range(1, settings.spark_workers + 1)
    ]
    thrift = _Process(
        "thrift",
        THRIFT_CLASS,
        (
            "spark-submit",
            "--class",
            THRIFT_CLASS,
            "--master",
            cluster_url(settings),
            "--name",
            "Sluice Thrift server",
            "--driver-memory",
            settings.spark_driver_memory,
            "spark-internal",
            "--hiveconf",
            f"hive.server2.thrift.port={settings.spark_thrift_port}",
            "--hiveconf",
            f"hive.server2.thrift.bind.host={HOST}",
        ),
    )
    return master, workers, thrift


def _spark_defaults(settings: Settings) -> dict[str, str]:
    """spark-defaults.conf: what every JVM of the cluster (and the dbt project) relies on."""
    spark_dir = settings.spark_dir
    cores = settings.spark_workers * settings.spark_worker_cores
    return {
        "spark.master": cluster_url(settings),
        # dbt's models compute days in UTC, as DuckDB does.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": str(settings.spark_warehouse_dir),
        "spark.sql.catalogImplementation": "hive",
        # The metastore is Derby in the spark folder: one Thrift server is its only client.
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={spark_dir / 'metastore_db'};create=true"
        ),
        # derby.log lands in derby.system.home, not in whatever folder the JVM started in.
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={spark_dir}",
        # In standalone mode a worker starts an executor only if its heap fits the memory
        # the worker offers: one executor per worker, taking all of it.
        "spark.executor.memory": settings.spark_worker_memory,
        "spark.executor.cores": str(settings.spark_worker_cores),
        "spark.driver.memory": settings.spark_driver_memory,
        # The default 200 shuffle partitions are 200 tiny tasks per stage on a few cores;
        # adaptive execution coalesces further where the data is smaller still.
        "spark.sql.shuffle.partitions": str(2 * cores),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        # dbt's insert_overwrite inserts into partitions named by the data.
        "spark.hadoop.hive.exec.dynamic.partition": "true",
        "spark.hadoop.hive.exec.dynamic.partition.mode": "nonstrict",
        # The driver's own UI on any free port (the master's is SLUICE_SPARK_UI_PORT).
        "spark.ui.port": "0",
        # Executors' logs and jars are removed once their application ends.
        "spark.worker.cleanup.enabled": "true",
    }


_LOG4J2 = """\
# Written by common/spark.py. Quiet: warnings, and the lines that say a part of the
# cluster started, went to each process's log file in {logs}.
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yyyy-MM-dd HH:mm:ss.SSS}} %p %c{{1}}: %m%n%ex
logger.master.name = org.apache.spark.deploy
logger.master.level = info
logger.thrift.name = org.apache.spark.sql.hive.thriftserver
logger.thrift.level = info
logger.hive.name = org.apache.hive.service
logger.hive.level = info
"""


def write_conf(settings: Settings) -> Path:
    """Write SPARK_CONF_DIR (spark-defaults.conf, log4j2.properties) and return it."""
    dirs = _dirs(settings)
    for folder in (*dirs.values(), settings.spark_warehouse_dir):
        folder.mkdir(parents=True, exist_ok=True)
    defaults = "".join(f"{key} {value}\n" for key, value in _spark_defaults(settings).items())
    (dirs["conf"] / "spark-defaults.conf").write_text(
        "# Written by common/spark.py from the SLUICE_SPARK_* settings; rewritten by each "
        "`sluice spark up`.\n" + defaults
    )
    (dirs["conf"] / "log4j2.properties").write_text(_LOG4J2.format(logs=dirs["logs"]))
    return dirs["conf"]


def spark_env(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the cluster."""
    env = dict(os.environ if env is None else env)
    home = spark_home()
    dirs = _dirs(settings)
    env.update(
        {
            "JAVA_HOME": str(java_home(env)),
            "SPARK_HOME": str(home),
            "SPARK_CONF_DIR": str(dirs["conf"]),
            "SPARK_LOG_DIR": str(dirs["logs"]),
            "SPARK_PID_DIR": str(dirs["run"]),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_LOCAL_DIRS": str(dirs["tmp"]),
            # Without it a worker would also advertise the machine's public name.
            "SPARK_PUBLIC_DNS": HOST,
        }
    )
    # A SPARK_* of another Spark installation must not point this one elsewhere.
    for key in ("SPARK_MASTER_HOST", "SPARK_MASTER_PORT", "SPARK_WORKER_DIR", "PYSPARK_PYTHON"):
        env.pop(key, None)
    return env


def _pid_file(settings: Settings, name: str) -> Path:
    return _dirs(settings)["run"] / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return _dirs(settings)["logs"] / f"{name}.log"


def _running(pid: int, main_class: str) -> bool:
    """Whether ``pid`` is a live process of ours (its command line names ``main_class``: a
    pid reused by another program after a crash does not count)."""
    with contextlib.suppress(ChildProcessError):
        # Our own child (the test session, or up() then down() in one process): reap it, so
        # a dead one does not linger as a zombie that answers kill(pid, 0).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and main_class in cmdline


def _read_pid(settings: Settings, process: _Process) -> int | None:
    """The live pid of ``process``, or None; a stale pid file is removed."""
    path = _pid_file(settings, process.name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if _running(pid, process.main_class):
        return pid
    path.unlink(missing_ok=True)
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def _master_json(settings: Settings) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{ui_url(settings)}/json/", timeout=2) as response:
            data: dict[str, Any] = json.load(response)
            return data
    except (OSError, ValueError):
        return None


def _workers_alive(settings: Settings) -> int | None:
    data = _master_json(settings)
    if data is None:
        return None
    return sum(1 for worker in data.get("workers", []) if worker.get("state") == "ALIVE")


def thrift_answers(settings: Settings) -> bool:
    """Whether the Thrift server answers ``select 1`` (within 10 s)."""
    if not _port_open(settings.spark_thrift_port):
        return False
    try:
        connection = thrift_connection(settings, timeout_seconds=10)
        try:
            cursor = connection.cursor()
            cursor.execute("select 1")
            return bool(cursor.fetchall() == [(1,)])
        finally:
            connection.close()
    except Exception:  # any failure of the probe means "not answering yet"
        return False


def status(settings: Settings) -> ClusterStatus:
    """What runs (pid files checked against live processes) and what answers."""
    master, workers, thrift = _processes(settings)

    def one(process: _Process) -> ProcessStatus:
        pid = _read_pid(settings, process)
        return ProcessStatus(process.name, pid, pid is not None, _log_file(settings, process.name))

    return ClusterStatus(
        master=one(master),
        workers=tuple(one(worker) for worker in workers),
        thrift=one(thrift),
        workers_alive=_workers_alive(settings),
        workers_expected=settings.spark_workers,
        thrift_answering=thrift_answers(settings),
        master_url=cluster_url(settings),
        ui_url=ui_url(settings),
        thrift_url=f"thrift://{HOST}:{settings.spark_thrift_port}",
    )


def _start(settings: Settings, process: _Process, env: Mapping[str, str]) -> int:
    log = _log_file(settings, process.name)
    executable = Path(env["SPARK_HOME"]) / "bin" / process.command[0]
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} sluice spark up\n".encode())
        out.flush()
        # spark-class ends in `exec java`: the pid is the JVM's, and the new session makes it
        # the leader of a process group holding the executors it forks (stopped with it).
        child = subprocess.Popen(
            [str(executable), *process.command[1:]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.spark_dir,
            env=dict(env),
            start_new_session=True,
        )
    _pid_file(settings, process.name).write_text(f"{child.pid}\n")
    return child.pid


@contextlib.contextmanager
def _stopped_on_failure(settings: Settings) -> Iterator[None]:
    try:
        yield
    except BaseException:
        down(settings)
        raise


def _wait(
    settings: Settings,
    deadline: float,
    ready: Any,
    what: str,
    log_of: _Process,
    started: list[_Process],
) -> None:
    """Poll ``ready()`` until it is true; fail early if a started process died."""
    while True:
        if ready():
            return
        for process in started:
            if _read_pid(settings, process) is None:
                raise SparkError(
                    f"the Spark {process.name} stopped while starting; read "
                    f"{_log_file(settings, process.name)}"
                )
        if time.monotonic() > deadline:
            raise SparkError(
                f"the Spark cluster did not come up within {UP_TIMEOUT_SECONDS:.0f} s ({what}); "
                f"read {_log_file(settings, log_of.name)}"
            )
        time.sleep(_POLL_SECONDS)


def up(settings: Settings, env: Mapping[str, str] | None = None) -> ClusterStatus | None:
    """Start the cluster and wait until the master lists every worker and the Thrift server
    answers ``select 1``. Returns None (and starts nothing) if it already runs. On failure,
    stops what it started and raises SparkError naming the log file to read."""
    master, workers, thrift = _processes(settings)
    if any(_read_pid(settings, process) is not None for process in (master, *workers, thrift)):
        return None
    child_env = spark_env(settings, env)
    for port, variable in (
        (settings.spark_master_port, "SLUICE_SPARK_MASTER_PORT"),
        (settings.spark_ui_port, "SLUICE_SPARK_UI_PORT"),
        (settings.spark_thrift_port, "SLUICE_SPARK_THRIFT_PORT"),
    ):
        if not _port_free(port):
            raise SparkError(
                f"port {port} on {HOST} is taken by another program: set {variable} to a free "
                "port (or stop that program)"
            )
    write_conf(settings)
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    started: list[_Process] = []
    with _stopped_on_failure(settings):
        _start(settings, master, child_env)
        started.append(master)
        # Workers and the Thrift server give up on a master that does not answer for a while
        # (the driver after three tries): start them once it listens.
        _wait(
            settings,
            deadline,
            lambda: _port_open(settings.spark_master_port) and _master_json(settings),
            "the master's port and web UI",
            master,
            started,
        )
        for worker in workers:
            _start(settings, worker, child_env)
            started.append(worker)
        _start(settings, thrift, child_env)
        started.append(thrift)
        _wait(
            settings,
            deadline,
            lambda: _workers_alive(settings) == settings.spark_workers,
            f"the master lists fewer than {settings.spark_workers} alive workers",
            workers[0],
            started,
        )
        _wait(
            settings,
            deadline,
            lambda: thrift_answers(settings),
            "the Thrift server does not answer `select 1`",
            thrift,
            started,
        )
    return status(settings)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            # The whole group: the JVM and any executor a worker forked.
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def down(settings: Settings) -> list[str]:
    """Stop the Thrift server, then the workers, then the master (SIGTERM, SIGKILL after
    DOWN_TIMEOUT_SECONDS) and remove their pid files. Returns the names it stopped."""
    master, workers, thrift = _processes(settings)
    stopped = []
    for group in ([thrift], workers, [master]):
        running = [(process, _read_pid(settings, process)) for process in group]
        live = [(process, pid) for process, pid in running if pid is not None]
        for _, pid in live:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT_SECONDS
        while any(_running(pid, process.main_class) for process, pid in live):
            if time.monotonic() > deadline:
                for _, pid in live:
                    _signal_group(pid, signal.SIGKILL)
                kill_deadline = time.monotonic() + 5
                while time.monotonic() < kill_deadline and any(
                    _running(pid, process.main_class) for process, pid in live
                ):
                    time.sleep(0.1)
                break
            time.sleep(0.1)
        for process in group:
            _pid_file(settings, process.name).unlink(missing_ok=True)
        stopped += [process.name for process, _ in live]
    return stopped
