"""The training job's entry point, lean enough for the job image: no Typer, no rich, no dev tools.

    python -m batchcast.entrypoints.job train --message '<train request JSON>'
    python -m batchcast.entrypoints.job train --dataset retail --city berlin [--actions train]

train_trigger hands long trainings to this command (a Cloud Run job on GCP, a local process
otherwise: see ``batchcast.backends.jobs``). ``batchcast train`` runs the same code and prints a
table. Exit codes: 0 done, 1 the training failed (its run record says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from batchcast.core.config import comma_list, load_profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import InvalidMessage, TrainRequest, decode
from batchcast.core.obs import configure_logging
from batchcast.core.settings import Settings
from batchcast.data import catalog
from batchcast.data import dataset as datasets
from batchcast.entrypoints import runtime
from batchcast.ports import BlobStore, Clock
from batchcast.steps import StepResult


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` with UTC as its zone when it has none (what a user typing a date means)."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def log_file(root: Path) -> TextIO:
    """The embedded backend's JSON log file under ``root``: terminals stay readable."""
    path = runtime.state_dir(root) / "logs" / "batchcast.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a")


def deployment(root: Path | None = None, clock: Clock | None = None) -> runtime.Runtime:
    """This deployment: GCS and Pub/Sub when ``BATCHCAST_BACKEND=gcp`` (real or the emulator
    stack), else the embedded backend on ``root`` (or ``BATCHCAST_ROOT``), logging to its file."""
    settings = Settings.from_env()
    if clock is None:
        clock = runtime.clock_for(settings)
    if settings.backend == "gcp":
        configure_logging(sys.stderr)
        return runtime.gcp(settings, clock=clock)
    root = root or settings.root
    configure_logging(log_file(root))
    return runtime.embedded(root, clock=clock, max_attempts=settings.max_attempts)


def is_local(target: runtime.Runtime) -> bool:
    """True when deliveries run in this process (the embedded bus), not in deployed functions."""
    return hasattr(target.bus, "drain")


def train_request(
    blobs: BlobStore,
    message: str | None = None,
    dataset: str | None = None,
    city: str | None = None,
    actions: str = "train,predict",
    at: datetime | None = None,
) -> TrainRequest:
    """The request to run: ``message`` decoded, or one built for ``dataset``/``city`` from its catalog.

    Raise ValueError saying what is wrong with the arguments.
    """
    if message:
        try:
            request = decode(message)
        except InvalidMessage as error:
            raise ValueError(str(error)) from error
        if not isinstance(request, TrainRequest):
            raise ValueError(f"--message is a {request.kind}, not a train-request")
        return request
    if not dataset or not city:
        raise ValueError("give --message, or --dataset and --city")
    try:
        profile = load_profile(dataset)
    except ConfigError as error:
        raise ValueError(str(error)) from error
    return TrainRequest(
        dataset=dataset,
        city=city,
        actions=comma_list(actions),
        fingerprint=datasets.fingerprint(catalog.read(blobs, profile, city), profile),
        logical_time=aware(at) or datetime.now(UTC),
    )


def train(target: runtime.Runtime, request: TrainRequest) -> StepResult:
    """Run the ``train`` step; on the embedded backend also the predictions it asks for."""
    result = target.handle("train", request)
    if is_local(target):
        target.bus.drain()
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m batchcast.entrypoints.job", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("train", help="train a city's model, then publish its predict requests")
    command.add_argument("--message", help="the train request JSON (what train_trigger passes to a job)")
    command.add_argument("--dataset", help="profile name (without --message)")
    command.add_argument("--city", help="city to train (without --message)")
    command.add_argument("--actions", default="train,predict", help="train, or train,predict")
    command.add_argument("--at", type=datetime.fromisoformat, help="pretend it is this time (ISO 8601)")
    command.add_argument("--root", type=Path, help="embedded backend: the directory that plays the bucket")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the job the arguments name; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    target = deployment(args.root)
    try:
        request = train_request(
            target.ports.blobs, args.message, args.dataset, args.city, args.actions, args.at
        )
    except ValueError as error:
        parser.error(str(error))
    result = train(target, request)
    for function, outcome in target.results:
        errors = "; ".join(f"{k}: {v}" for k, v in outcome.errors.items())
        print(f"{function}: {outcome.status} {outcome.counts} {errors}".rstrip())
    return 1 if result.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
