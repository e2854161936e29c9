"""Job launchers: where train_trigger's long trainings run.

* :class:`ProcessJobLauncher` starts ``python -m batchcast.entrypoints.job train --message ...`` as
  a local process, with the environment of the deployment it belongs to (the embedded backend, or
  the emulator stack).
* :class:`CloudRunJobLauncher` executes a Cloud Run job with the same arguments on GCP.

Either way the job runs the ``train`` step through the runtime, so it writes a run record and
publishes the city's predict requests when its model is ready.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchcast.core.messages import Message, encode


def job_arguments(request: Message) -> list[str]:
    """The job's arguments that run ``request`` (the same for every launcher): see
    ``batchcast.entrypoints.job``."""
    body, _ = encode(request)
    return ["train", "--message", body.decode()]


class ProcessJobLauncher:
    """Runs each job as a separate local job process; its output goes to a log file."""

    def __init__(self, log_dir: Path, environment: Callable[[], dict[str, str]]) -> None:
        self.log_dir = Path(log_dir)
        self.environment = environment  # asked at each launch: a pinned test clock may have moved
        self.processes: list[subprocess.Popen] = []

    def launch(self, request: Message) -> str:
        """Start the job and return its id (``train-<pid>``) without waiting for it."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "batchcast.entrypoints.job", *job_arguments(request)]
        log_path = self.log_dir / f"train-{request.idempotency_key[:12]}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env=os.environ | self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a job outlives the function instance that started it
            )
        self.processes.append(process)
        return f"train-{process.pid} (log {log_path})"

    def wait(self, timeout: float | None = None) -> list[int]:
        """Wait for every job started so far; return their exit codes (tests, the local CLI)."""
        return [process.wait(timeout) for process in self.processes]


class CloudRunJobLauncher:
    """Executes the Cloud Run job ``projects/P/locations/R/jobs/J`` with the request as arguments.

    The job's container command is ``python -m batchcast.entrypoints.job`` (Terraform sets it); only
    its arguments are overridden per execution.
    """

    def __init__(self, job_name: str, client: Any = None) -> None:
        self.job_name = job_name
        self._client = client

    def launch(self, request: Message) -> str:
        """Start an execution and return the long-running operation's name; do not wait for it."""
        operation = self._jobs_client().run_job(request=run_job_request(self.job_name, request))
        return operation.operation.name

    def _jobs_client(self) -> Any:
        if self._client is None:
            from google.cloud import run_v2

            self._client = run_v2.JobsClient()
        return self._client


def run_job_request(job_name: str, request: Message) -> Any:
    """The ``RunJobRequest`` that executes ``job_name`` for ``request``."""
    from google.cloud import run_v2

    override = run_v2.RunJobRequest.Overrides.ContainerOverride(args=job_arguments(request))
    return run_v2.RunJobRequest(
        name=job_name, overrides=run_v2.RunJobRequest.Overrides(container_overrides=[override])
    )
