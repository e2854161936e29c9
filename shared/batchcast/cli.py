"""The ``batchcast`` command: generate data, upload it, tick the schedule, run the demo, show status."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchcast import runtime, synth, uploads
from batchcast import status as status_report
from batchcast.backends.embedded import BOOKKEEPING
from batchcast.config import ConfigError, load_profile, profile_names
from batchcast.demo import DemoResult, prepare_root, run_demo
from batchcast.messages import ScheduleTick, Topic
from batchcast.obs import configure_logging
from batchcast.ports import FixedClock, SystemClock

app = typer.Typer(help="batchcast: uploads in, fresh batch forecasts out.", no_args_is_help=True)
console = Console()

RootOption = Annotated[Path, typer.Option(help="Embedded backend: the directory that plays the bucket.")]
NowOption = Annotated[
    datetime | None, typer.Option(help="Pretend it is this time (ISO 8601, UTC if no offset).")
]


def _yesterday() -> date:
    return date.today() - timedelta(days=1)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _profile(name: str):
    try:
        return load_profile(name)
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="CSV file to write.")],
    profile: Annotated[str, typer.Option(help="retail, bikeshare, or a profile .toml")] = "retail",
    stores: Annotated[int, typer.Option(help="How many stores (or stations).", min=1)] = 50,
    days: Annotated[int, typer.Option(help="How many days of history.", min=1)] = 365,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same file.")] = 0,
    fmt: Annotated[
        str, typer.Option("--format", help="native, or a user-style format of the profile.")
    ] = "native",
    end: Annotated[datetime | None, typer.Option(help="Last day of data (default: yesterday).")] = None,
) -> None:
    """Write realistic synthetic data for a profile."""
    chosen = _profile(profile)
    try:
        frame = synth.generate(
            chosen, stores, days, seed=seed, end=end.date() if end else _yesterday(), fmt=fmt
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    synth.write_csv(frame, out)
    console.print(f"wrote {len(frame):,} rows to {out}")


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .csv or .avro file.")],
    dataset: Annotated[
        str | None, typer.Option(help="Profile name (detected from the header if omitted).")
    ] = None,
    mapping: Annotated[str | None, typer.Option(help="Column mapping of the profile to use.")] = None,
    root: RootOption = Path("batchcast-data"),
    now: NowOption = None,
) -> None:
    """Upload a file to raw/ and run everything it triggers (embedded backend)."""
    configure_logging(_log_file(root))
    clock = FixedClock(_aware(now)) if now else SystemClock()
    deployment = runtime.embedded(root, clock=clock)
    ext = file.suffix.lstrip(".").lower()
    try:
        name = uploads.store_upload(
            deployment.ports.blobs,
            file.read_bytes(),
            ext=ext,
            now=clock.now(),
            dataset=dataset,
            mapping=mapping,
        )
    except (ValueError, uploads.UploadConflict) as error:
        raise typer.BadParameter(str(error)) from error
    _drain_with_progress(deployment)
    console.print(f"uploaded {file} as {name}")
    _print_runs(deployment)


@app.command()
def tick(
    dataset: Annotated[str, typer.Option(help="Profile name.")],
    actions: Annotated[
        str, typer.Option(help="Comma-separated: train, predict, notify.")
    ] = "train,predict,notify",
    at: NowOption = None,
    root: RootOption = Path("batchcast-data"),
) -> None:
    """Publish a schedule tick, as Cloud Scheduler does, and run what it triggers."""
    configure_logging(_log_file(root))
    _profile(dataset)
    moment = _aware(at) or datetime.now(UTC)
    deployment = runtime.embedded(root, clock=FixedClock(moment))
    chosen = [a.strip() for a in actions.split(",") if a.strip()]
    try:
        message = ScheduleTick(dataset=dataset, actions=chosen, logical_time=moment)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    deployment.ports.bus.publish(Topic.SCHEDULE, message)
    _drain_with_progress(deployment)
    _print_runs(deployment)


@app.command()
def demo(
    profile: Annotated[str, typer.Option(help="retail or bikeshare")] = "retail",
    stores: Annotated[int, typer.Option(help="Stores (or stations).", min=2)] = 40,
    days: Annotated[int, typer.Option(help="Days of history.", min=60)] = 365,
    root: RootOption = Path("demo-output"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    end: Annotated[datetime | None, typer.Option(help="Last day of data (default: yesterday).")] = None,
) -> None:
    """Generate data and run the whole flow in-process; print a summary and draw a chart."""
    chosen = _profile(profile)
    try:
        prepare_root(root)
    except FileExistsError as error:
        raise typer.BadParameter(str(error)) from error
    configure_logging(_log_file(root))
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def update(function: str, count: int) -> None:
            if function not in tasks:
                tasks[function] = progress.add_task(function, total=None)
            progress.update(tasks[function], completed=count, description=f"{function:<14} {count} runs")

        progress.add_task(f"{chosen.name}: {stores} entities × {days} days", total=None)
        result = run_demo(
            chosen,
            entities=stores,
            days=days,
            root=root,
            seed=seed,
            end=end.date() if end else _yesterday(),
            progress=update,
        )
    _print_demo(result)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _drain_with_progress(deployment: runtime.Runtime) -> None:
    with console.status("running the pipeline…"):
        deployment.bus.drain()


def _log_file(root: Path) -> TextIO:
    # JSON log lines go to a file so the terminal stays readable; functions log to stdout instead.
    path = root / BOOKKEEPING / "logs" / "batchcast.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a")


def _print_runs(deployment: runtime.Runtime) -> None:
    table = Table("function", "status", "counts", "errors / notes")
    for function, result in deployment.results:
        counts = ", ".join(f"{k}={v}" for k, v in result.counts.items())
        remarks = "; ".join([f"{k}: {v}" for k, v in result.errors.items()] + result.notes)
        table.add_row(function, result.status, counts, remarks[:120])
    console.print(table)


def _print_demo(result: DemoResult) -> None:
    table = Table(title=f"{result.profile} demo, clock at {result.clock:%Y-%m-%d %H:%M %Z}")
    for column in ("city", "forecast", "target", "MASE", "WAPE", "P10–P90"):
        table.add_column(column, justify="left" if column in ("city", "target") else "right")
    for city in result.cities:
        table.add_row(
            city.city,
            str(city.entities_forecast),
            (city.target or "-").replace("T", " ")[:16],
            _fmt(city.mase),
            _fmt(city.wape),
            _fmt(city.coverage),
        )
    console.print(table)
    console.print("MASE, WAPE and P10–P90 coverage come from each city's rolling-origin backtest.")
    steps = Table(title="time per step")
    for column in ("function", "runs", "seconds"):
        steps.add_column(column, justify="left" if column == "function" else "right")
    for function in ("partition", "train_trigger", "predict", "notify"):
        steps.add_row(
            function, str(result.step_runs.get(function, 0)), f"{result.step_seconds.get(function, 0):.2f}"
        )
    console.print(steps)
    total = sum(c.entities_forecast for c in result.cities)
    console.print(
        f"{result.rows:,} rows uploaded as {result.upload}\n{total} entities forecast, "
        f"{result.dead_letters} dead letters, {result.seconds:.1f} s in all"
    )
    console.print(f"outputs: {result.root}/ (predictions/, results/, metrics/, models/, runs/, status/)")
    if result.chart:
        console.print(f"chart:   {result.chart}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def status(
    root: RootOption = Path("batchcast-data"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per dataset and city: last success, last failure, stale entities, dead letters, long runs."""
    if not (root / BOOKKEEPING).is_dir():
        raise typer.BadParameter(f"{root} is not a batchcast root (no {BOOKKEEPING}/ inside)")
    deployment = runtime.embedded(root)
    document = status_report.collect(deployment.ports.blobs, deployment.bus.dead_letters)
    if as_json:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    printable = status_report.rows(document)
    table = Table(title=f"batchcast status of {root}")
    for column in printable[0] if printable else ("dataset", "city"):
        table.add_column(column, overflow="fold")
    for line in printable:
        table.add_row(*line.values())
    console.print(table)


@app.command()
def profiles(name: Annotated[str | None, typer.Argument(help="Show one profile in full.")] = None) -> None:
    """List the known profiles, or validate and show one (a name or a .toml path)."""
    if name is None:
        for known in profile_names():
            chosen = load_profile(known)
            console.print(f"{known:<12} {chosen.description}  (mappings: {', '.join(chosen.mappings)})")
        return
    console.print_json(_profile(name).model_dump_json())


if __name__ == "__main__":
    app()
