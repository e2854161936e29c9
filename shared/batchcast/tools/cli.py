"""The ``batchcast`` command: generate data, upload it, tick the schedule, run the demo, show status."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from batchcast.core import schemas
from batchcast.core.config import (
    Profile,
    comma_list,
    enabled_profiles,
    load_profile,
    parse_profile,
    profile_problems,
)
from batchcast.core.errors import ConfigError
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.core.obs import configure_logging
from batchcast.core.settings import Settings
from batchcast.data import catalog, uploads
from batchcast.entrypoints import job, runtime
from batchcast.entrypoints.wiring import FUNCTIONS, route_for_subscription
from batchcast.ops import deadletters, reruns, tokens
from batchcast.ops import status as status_report
from batchcast.ports import FixedClock
from batchcast.tools import profile_init, stack, synth
from batchcast.tools import replay as replays
from batchcast.tools.demo import DemoResult, forecast_entities, prepare_root, run_demo

app = typer.Typer(help="batchcast: uploads in, fresh batch forecasts out.", no_args_is_help=True)
# Output that is not a terminal (a log, CI) gets no live spinners or timers and a wider page, so
# table cells wrap whole words instead of being cut.
console = Console() if sys.stdout.isatty() else Console(width=120)

# Typer 0.29 prints a value type beside flags ("--json <bool>"): a flag takes no value, show none.
# It shows repeatable values as Python ("<list[str]>"): show "<str...>", as a shell user reads it.
_option_type = typer.core.TyperOption.display_type_rich
_argument_type = typer.core.TyperArgument.display_type_rich


def _shown_type(shown: str | None) -> str | None:
    return re.sub(r"list\[(\w+)\]", r"\1...", shown) if shown else shown


typer.core.TyperOption.display_type_rich = lambda self, ctx: (  # type: ignore[method-assign]
    None if self.is_flag else _shown_type(_option_type(self, ctx))
)
typer.core.TyperArgument.display_type_rich = lambda self, ctx: _shown_type(_argument_type(self, ctx))  # type: ignore[method-assign]

RootOption = Annotated[
    Path | None,
    typer.Option(help="Embedded backend: the directory that plays the bucket (default: BATCHCAST_ROOT)."),
]
NowOption = Annotated[
    datetime | None, typer.Option(help="Pretend it is this time (ISO 8601, UTC if no offset).")
]


def _yesterday() -> date:
    return date.today() - timedelta(days=1)


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


# What `batchcast upload` exits with (its --help and README's "Using it" say the same).
EXIT_FAILED = 1  # a run failed, a message was dead-lettered or a training job failed
EXIT_USAGE = 2  # bad arguments (typer's own code)
EXIT_FILE_REJECTED = 3  # nothing flowed: the file was rejected whole, or every row of it
EXIT_ROWS_REJECTED = 4  # some rows were rejected; the others flowed


@app.command()
def init(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Your CSV file.")],
    name: Annotated[str | None, typer.Option(help="Profile name (default: from the file name).")] = None,
    entity: Annotated[str | None, typer.Option(help="Column naming the store/station.")] = None,
    time: Annotated[str | None, typer.Option(help="Column holding the date or time.")] = None,
    target: Annotated[str | None, typer.Option(help="Column to forecast (none: count rows).")] = None,
    frequency: Annotated[str | None, typer.Option(help="daily or hourly (default: the file's step).")] = None,
    city: Annotated[str | None, typer.Option(help="City of a file without a city column.")] = None,
    country: Annotated[str | None, typer.Option(help="The city's country (holidays), e.g. US.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Time zone of the file's times.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Profile to write (default: profiles/<name>.toml).")
    ] = None,
    now: NowOption = None,
) -> None:
    """Inspect a CSV file, write a commented profile that reads it, and dry-run a partition of it.

    Asks (at a terminal) only what the file cannot tell; pass the options to script it.
    """
    answers = profile_init.Answers(name, entity, time, target, frequency, city, country, timezone)
    try:
        found = profile_init.inspect_file(file, answers)
        if sys.stdin.isatty():
            asked = profile_init.ask(answers, found)
            if asked.frequency != found.frequency:
                found = profile_init.inspect_file(file, asked)
            answers = asked
        elif profile_init.unanswered(answers, found):
            raise profile_init.InitError(
                "not at a terminal, so nothing can be asked: pass "
                + " ".join(f"{o} ..." for o in profile_init.unanswered(answers, found))
                + " (e.g. --city dc --country US --timezone America/New_York)"
            )
        text = profile_init.profile_text(found, answers)
    except profile_init.InitError as error:
        raise typer.BadParameter(str(error)) from error
    profile = parse_profile(text, "the generated profile")  # a ConfigError here is a bug in init
    written = out or Path("profiles") / f"{profile.name}.toml"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(text)
    dry = profile_init.dry_partition(file, profile, job.aware(now) or datetime.now(UTC))
    for line in profile_init.summary(found, written, dry):
        console.print(line, markup=False, soft_wrap=True)
    console.print(
        f"next: BATCHCAST_PROFILE_DIR={written.parent} batchcast upload {file}", markup=False, soft_wrap=True
    )
    if dry.file_errors or not dry.rows_accepted:
        raise typer.Exit(3)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .csv or .avro file.")],
    dataset: Annotated[
        str | None, typer.Option(help="Profile name (detected from the header if omitted).")
    ] = None,
    mapping: Annotated[str | None, typer.Option(help="Column mapping of the profile to use.")] = None,
    root: RootOption = None,
    now: NowOption = None,
) -> None:
    """Upload a file to raw/ and run everything it triggers (embedded backend).

    The file is streamed from disk, never read whole. Exit codes: 0 everything flowed; 1 a run
    failed or a message was dead-lettered; 2 bad arguments; 3 nothing flowed (the file, or every
    row of it, was rejected); 4 some rows were rejected, the rest flowed. The last line says why.
    """
    deployment = job.deployment(root, FixedClock(job.aware(now)) if now else None)
    clock = deployment.ports.clock
    ext = file.suffix.lstrip(".").lower()
    dead_before = _dead_letter_count(deployment)
    try:
        name = uploads.store_upload(
            deployment.ports.blobs, file, ext=ext, now=clock.now(), dataset=dataset, mapping=mapping
        )
    except (ValueError, uploads.UploadConflict) as error:
        raise typer.BadParameter(str(error)) from error
    jobs_failed = _drain_with_progress(deployment)
    console.print(f"uploaded {file} as {name}")
    _print_runs(deployment)
    code, why = _upload_outcome(deployment, name, _dead_letter_count(deployment) - dead_before, jobs_failed)
    if code:
        console.print(f"exit {code}: {why}", markup=False, soft_wrap=True)  # one line, however long
        raise typer.Exit(code)


def _dead_letter_count(deployment: runtime.Runtime) -> int:
    if not job.is_local(deployment):
        return 0
    return sum(len(deployment.bus.dead_letters(topic.value)) for topic in Topic)


def _upload_outcome(
    deployment: runtime.Runtime, name: str, dead_letters: int, jobs_failed: int
) -> tuple[int, str]:
    """The exit code of an upload's runs and why (see ``upload``); (0, "") when all flowed."""
    failures = [
        f"{function} {result.status}: " + "; ".join(f"{k}: {v}" for k, v in result.errors.items())
        for function, result in deployment.results
        if result.status == "failed" or (function != "partition" and result.status == "partial")
    ]
    if dead_letters:
        failures.append(f"{dead_letters} message(s) dead-lettered (batchcast status lists them)")
    if jobs_failed:
        failures.append(f"{jobs_failed} training job(s) failed (logs in {runtime.STATE_DIR}/jobs/)")
    if failures:
        return EXIT_FAILED, "; ".join(failures)
    for function, result in deployment.results:
        if function == "partition" and result.status in ("rejected", "partial"):
            # Partition's last note is its summary: what flowed and why the rest did not.
            report = result.details.get("report")
            why = f"{name}: {result.notes[-1]}" + (f" (report: {report})" if report else "")
            return (EXIT_FILE_REJECTED if result.status == "rejected" else EXIT_ROWS_REJECTED), why
    return 0, ""


@app.command()
def tick(
    dataset: Annotated[str, typer.Option(help="Profile name.")],
    actions: Annotated[
        str, typer.Option(help="Comma-separated: train, predict, notify.")
    ] = "train,predict,notify",
    at: NowOption = None,
    root: RootOption = None,
) -> None:
    """Publish a schedule tick, as Cloud Scheduler does, and run what it triggers."""
    _profile(dataset)
    moment = job.aware(at) or datetime.now(UTC)
    deployment = job.deployment(root, FixedClock(moment))
    chosen = comma_list(actions)
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
    root: Annotated[Path, typer.Option(help="The directory that plays the bucket.")] = Path("demo-output"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    end: Annotated[datetime | None, typer.Option(help="Last day of data (default: yesterday).")] = None,
) -> None:
    """Generate data and run the whole flow in-process; print a summary and draw a chart."""
    chosen = _profile(profile)
    try:
        prepare_root(root)
    except FileExistsError as error:
        raise typer.BadParameter(str(error)) from error
    configure_logging(job.log_file(root))
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
    """Live runs per function at a terminal; elsewhere nothing live (the steps table has the times).
    No elapsed column: a task's clock runs from its first run to the end, not the function's time."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=console, disable=not console.is_terminal
    )


@contextmanager
def _working(text: str) -> Iterator[None]:
    """A spinner at a terminal; one plain line elsewhere."""
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        console.print(text, markup=False)
        yield


def _drain_with_progress(deployment: runtime.Runtime) -> int:
    """Run what was published (embedded backend); return how many training jobs failed."""
    if not job.is_local(deployment):
        console.print("published; the deployment's functions take it from here (see batchcast status)")
        return 0
    with _working("running the pipeline…"):
        deployment.bus.drain()
    launched = deployment.ports.jobs.processes if deployment.ports.jobs else []
    if not launched:
        return 0
    # Training jobs are separate processes that run their cities' predictions themselves.
    with _working(f"waiting for {len(launched)} training job(s)…"):
        codes = deployment.ports.jobs.wait()
    console.print(f"training jobs finished with exit codes {codes}; logs in {runtime.STATE_DIR}/jobs/")
    return sum(1 for code in codes if code)


def _print_runs(deployment: runtime.Runtime) -> None:
    table = Table("function", "status", "counts", "errors / notes")
    for function, result in deployment.results:
        counts = ", ".join(f"{k}={v}" for k, v in result.counts.items())
        remarks = "; ".join([f"{k}: {v}" for k, v in result.errors.items()] + result.notes)
        table.add_row(function, result.status, counts, remarks[:120])
    console.print(table)


def _print_demo(result: DemoResult) -> None:
    table = Table(title=f"{result.profile} demo, clock at {result.clock:%Y-%m-%d %H:%M %Z}")
    backtest = ("MASE", "WAPE", "P10–P90 raw", "P10–P90")
    for column in ("city", "forecast", "target", *backtest, "scored", "live P10–P90"):
        table.add_column(column, justify="left" if column in ("city", "target") else "right")
    for city in result.cities:
        table.add_row(
            city.city,
            str(city.entities_forecast),
            (city.target or "-").replace("T", " ")[:16],
            _fmt(city.mase),
            _fmt(city.wape),
            _fmt(city.coverage_raw),
            _fmt(city.coverage),
            str(city.track_periods),
            _fmt(city.track_coverage),
        )
    console.print(table)
    console.print(
        "MASE, WAPE and P10–P90 coverage come from each city's rolling-origin backtest. P10–P90: the "
        "band calibrated on the other origins (target 0.80); raw: the quantile models' own band. "
        "scored and live P10–P90: the track record on the managers' page (periods forecast before "
        "they began whose actuals arrived with a later upload) and how often the band held them."
    )
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
        f"{result.rows:,} rows uploaded as {result.upload}"
        + (f" and {result.daily_uploads} daily uploads after it" if result.daily_uploads else "")
        + f"\n{total} entities forecast, "
        f"{result.dead_letters} dead letters, {result.seconds:.1f} s in all"
    )
    console.print(f"outputs: {result.root}/ (predictions/, results/, metrics/, models/, runs/, status/)")
    if result.chart:
        console.print(f"chart:   {result.chart} (P50 and P10–P90 band against the backtest's actuals)")
    if result.manager_token:
        console.print(
            f"managers' page: run   batchcast serve --root {result.root}\n"
            f"                open  http://127.0.0.1:8080/#token={result.manager_token}\n"
            f"                (token of demo-manager, who sees {', '.join(result.manager_entities)}; "
            f"its digest is in {result.root}/config/api_tokens.json)",
            markup=False,
            soft_wrap=True,
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def status(
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per dataset and city: last success, last failure, stale entities, dead letters, long runs,
    and live accuracy against the backtest."""
    settings = Settings.from_env()
    root = root or settings.root
    if settings.backend == "embedded" and not runtime.state_dir(root).is_dir():
        raise typer.BadParameter(f"{root} is not a batchcast root (no {runtime.STATE_DIR}/ inside)")
    deployment = job.deployment(root)  # gcp: the bucket and the dead-letter subscriptions
    document = status_report.collect(
        deployment.ports.blobs, deployment.bus.dead_letters, deployment.ports.clock.now()
    )
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
    accuracy = status_report.accuracy_rows(document)
    if accuracy:
        drift = Table(title="live accuracy against the LATEST backtest (last scheduled check)")
        for column in accuracy[0]:
            drift.add_column(column, overflow="fold")
        for line in accuracy:
            drift.add_row(*line.values())
        console.print(drift)


@app.command()
def reindex(
    dataset: Annotated[str, typer.Option(help="The dataset (profile) whose batch_data/ to index.")],
    root: RootOption = None,
) -> None:
    """Rebuild the city manifests of a dataset from one listing of its batch_data/.

    For buckets written before batchcast kept manifests: every reader finds files through them.
    """
    profile = _profile(dataset)
    deployment = job.deployment(root)
    counted = catalog.rebuild(deployment.ports.blobs, profile)
    for city, files in counted.items():
        console.print(f"{profile.name}/{city}: {files} file(s) in the manifest")
    if not counted:
        console.print(f"no batch_data/ files of {profile.name} found")


@app.command()
def train(
    message: Annotated[
        str | None, typer.Option(help="The train request JSON (what train_trigger passes to a job).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Profile name (without --message).")] = None,
    city: Annotated[str | None, typer.Option(help="City to train (without --message).")] = None,
    actions: Annotated[str, typer.Option(help="train, or train,predict.")] = "train,predict",
    at: NowOption = None,
    root: RootOption = None,
) -> None:
    """Run one training job: train a city's model, then publish its predict requests.

    The training job image runs the same code without this command: ``python -m
    batchcast.entrypoints.job train ...``.
    """
    deployment = job.deployment(root)
    try:
        request = job.train_request(deployment.ports.blobs, message, dataset, city, actions, at)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    result = job.train(deployment, request)
    _print_runs(deployment)
    if result.status == "failed":
        raise typer.Exit(1)


@app.command()
def replay(
    subscription: Annotated[str, typer.Option(help="Subscription id, e.g. predict--predict-requests.")],
    since: Annotated[datetime, typer.Option(help="Re-deliver what was published at or after this time.")],
    dry_run: Annotated[bool, typer.Option(help="Only say what would be re-delivered.")] = False,
    root: RootOption = None,
) -> None:
    """Re-deliver a subscription's messages since a time (Pub/Sub seek; the message log locally)."""
    deployment = job.deployment(root)
    try:
        route = route_for_subscription(subscription)
    except KeyError as error:
        raise typer.BadParameter(str(error.args[0])) from error
    moment = job.aware(since)
    if not job.is_local(deployment):
        verb = "would seek" if dry_run else "seeking"
        console.print(
            f"{verb} {subscription} to {moment.isoformat()}: Pub/Sub re-delivers every message retained "
            f"since then; {route.function} acknowledges without work what it already finished"
        )
        if not dry_run:
            deployment.bus.seek(subscription, moment)
        return
    plan = replays.plan_replay(deployment.bus.log(), subscription, moment)
    verb = "would re-deliver" if dry_run else "re-delivering"
    console.print(f"{verb} {len(plan)} message(s) to {subscription}:")
    # "done": the function already finished it, so it is acknowledged without work; "run": it runs.
    for redelivery in plan:
        done = redelivery.done(deployment.ports.blobs, route.function)
        console.print(f"  {'done' if done else 'run '}  {redelivery.describe()}", soft_wrap=True)
    if dry_run or not plan:
        return
    for redelivery in plan:
        deployment.bus.redeliver(subscription, redelivery.entry)
    _drain_with_progress(deployment)
    _print_runs(deployment)


@app.command()
def rerun(
    dataset: Annotated[str, typer.Option(help="Profile name.")],
    day: Annotated[
        datetime | None, typer.Option("--date", formats=["%Y-%m-%d"], help="One local date to re-run.")
    ] = None,
    first: Annotated[
        datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First local date of a range.")
    ] = None,
    last: Annotated[
        datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last local date (default: --from).")
    ] = None,
    city: Annotated[list[str] | None, typer.Option(help="Only this city (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list the ticks that would be republished.")] = False,
    now: NowOption = None,
    root: RootOption = None,
) -> None:
    """Republish the scheduled work (train, predict, notify) of a day or a range of days so it runs
    again; what did not change writes nothing new."""
    profile = _profile(dataset)
    start = day or first
    if start is None or (day and (first or last)):
        raise typer.BadParameter("give --date, or --from (and --to)")
    end = last or start
    clock = FixedClock(job.aware(now)) if now else None
    try:
        planned = reruns.plan(
            profile, start.date(), end.date(), city or [], reruns.new_rerun_id(datetime.now(UTC))
        )
    except reruns.RerunError as error:
        raise typer.BadParameter(str(error)) from error
    verb = "would republish" if dry_run else f"republishing as {planned.rerun_id}"
    span = f"{start:%Y-%m-%d}" + (f" to {end:%Y-%m-%d}" if end != start else "")
    console.print(f"{verb} {len(planned.ticks)} schedule tick(s) of {profile.name} on {span}:")
    for line in planned.lines():
        console.print(f"  {line}", soft_wrap=True)
    if dry_run:
        return
    deployment = job.deployment(root, clock)
    for tick in planned.ticks:  # in time order: a day's training runs before the predictions that use it
        reruns.publish(deployment.ports.bus, [tick])
        _drain_with_progress(deployment)
    _print_runs(deployment)


@app.command()
def grant(
    name: Annotated[str, typer.Argument(help="Who gets the token (a manager's name).")],
    dataset: Annotated[str, typer.Option(help="The dataset whose entities they may see.")],
    entity: Annotated[
        list[str] | None, typer.Option(help="An entity they may see (repeat; default: all with a forecast).")
    ] = None,
    root: RootOption = None,
) -> None:
    """Give a manager a token for the page; the bucket's token map keeps only its digest."""
    blobs = job.deployment(root).ports.blobs
    entities = entity or forecast_entities(blobs, dataset)
    if not entities:
        raise typer.BadParameter(f"dataset {dataset!r} has no forecasts yet: upload its data first")
    token = tokens.grant(blobs, name, "manager", {dataset: entities})
    console.print(f"{name} may see {len(entities)} of {dataset}: {', '.join(entities[:10])}", markup=False)
    console.print(f"token: {token}\nopen:  http://127.0.0.1:8080/#token={token}  (after batchcast serve)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8080,
    root: Annotated[
        Path | None,
        typer.Option(help="Embedded bucket directory; without it, BATCHCAST_BACKEND and friends decide."),
    ] = None,
) -> None:
    """Serve the results API and the managers' page (uvicorn)."""
    import uvicorn

    from batchcast_api.app import app as from_env_app
    from batchcast_api.app import create_app

    # --root serves a local bucket directly; otherwise the deployment's settings pick the backend.
    if root:  # BATCHCAST_NOW pins the console's clock too (tests, replays of a past day)
        pinned = Settings.from_env().now
        served = create_app(deployment=runtime.embedded(root, clock=FixedClock(pinned) if pinned else None))
    else:
        served = from_env_app
    uvicorn.run(served, host=host, port=port, log_level="info")


@app.command()
def profiles(
    name: Annotated[
        str | None, typer.Argument(help="Validate and show one (a name or a .toml path).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated profile as JSON.")] = False,
) -> None:
    """List the known profiles with their schema, covariates and mappings, or validate and show one.

    Every mistake in a profile is printed, one per line, and the command exits 1.
    """
    try:
        chosen = [load_profile(name)] if name else enabled_profiles()
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    # Listing all: the good ones are shown, each broken file is named with why, and the exit says so.
    problems = {} if name else profile_problems()
    if as_json:
        typer.echo("\n".join(profile.model_dump_json(indent=2) for profile in chosen))
    else:
        for profile in chosen:
            typer.echo("\n".join(_profile_summary(profile)))
    for why in problems.values():
        typer.echo(f"broken profile: {why}", err=True)
    if problems:
        raise typer.Exit(1)


def _profile_summary(profile: Profile) -> list[str]:
    """What a user needs to write files for a profile: its schema, covariates and mappings."""
    fields = [f for f in schemas.fields(schemas.observation(profile)) if f not in schemas.BOOKKEEPING_FIELDS]
    covariates = [
        f"{n} ({c.type}, {c.timing}{'' if n in profile.model_covariates else ', not used by the model'})"
        for n, c in profile.covariates.items()
    ]
    keys = f"entity {profile.entity_key}, time {profile.time_column} ({profile.frequency})"
    lines = [
        f"{profile.name}: {profile.description}",
        f"  {keys}, target {profile.target}",
        f"  schema      {', '.join(fields)} (+ {', '.join(schemas.BOOKKEEPING_FIELDS)})",
        f"  covariates  {', '.join(covariates) or 'none'}",
    ]
    for name, mapping in profile.mappings.items():
        # field, or field <- 'Column' where the user's column is named otherwise; constants as field = value
        reads = [f if c == f else f"{f} <- {c!r}" for f, c in mapping.columns.items()]
        reads += [f"{f} = {v!r}" for f, v in mapping.constants.items()]
        lines.append(f"  mapping     {name} ({mapping.kind}): {', '.join(reads)}")
    return [*lines, ""]


deadletters_app = typer.Typer(help="Dead-lettered messages: list, redrive (republish) or discard them.")
app.add_typer(deadletters_app, name="deadletters")
TopicOption = Annotated[str | None, typer.Option(help="Only this topic (default: every topic).")]
LetterIds = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (from list); none: all.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do it without asking.")]


@deadletters_app.command("list")
def deadletters_list(
    topic: TopicOption = None,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every dead letter with its error, attempts, attributes and age."""
    deployment = job.deployment(root)
    letters = _letters(deployment, topic)
    if as_json:
        typer.echo(json.dumps(letters, indent=2, sort_keys=True, default=str))
        return
    table = Table("id", "topic", "kind", "dataset", "city", "attempts", "age", "error", title="dead letters")
    for letter in letters:
        age = f"{letter['age_seconds'] // 60} min" if letter["age_seconds"] is not None else "-"
        cells = (letter["id"], letter["topic"], letter["kind"], letter["dataset"], letter["city"])
        table.add_row(*(str(c or "-") for c in cells), str(letter["attempts"] or "-"), age, letter["error"])
    console.print(table)


TopicArgument = Annotated[str, typer.Option(help="The topic the letters were dead-lettered from.")]


@deadletters_app.command("redrive")
def deadletters_redrive(
    topic: TopicArgument, ids: LetterIds = None, yes: YesOption = False, root: RootOption = None
) -> None:
    """Republish dead letters to their original topic (and run what they trigger, embedded)."""
    deployment = _act_on_letters(root, topic, ids, yes, "redrive", f"redrove {{}} dead letter(s) to {topic}")
    _drain_with_progress(deployment)
    if job.is_local(deployment):
        _print_runs(deployment)


@deadletters_app.command("discard")
def deadletters_discard(
    topic: TopicArgument, ids: LetterIds = None, yes: YesOption = False, root: RootOption = None
) -> None:
    """Drop dead letters for good."""
    _act_on_letters(root, topic, ids, yes, "discard", f"discarded {{}} dead letter(s) of {topic}")


def _act_on_letters(
    root: Path | None, topic: str, ids: list[str] | None, yes: bool, verb: str, done: str
) -> runtime.Runtime:
    """Confirm, then redrive or discard the letters; print which, and any ids that were not found."""
    deployment = job.deployment(root)
    _confirm(deployment, topic, ids, verb, yes)
    action = deadletters.redrive if verb == "redrive" else deadletters.discard
    acted = action(deployment.ports.bus, topic, ids)
    console.print(f"{done.format(len(acted))}: {', '.join(acted) or '-'}", soft_wrap=True)
    _missing_letters(ids, acted)
    return deployment


def _letters(deployment: runtime.Runtime, topic: str | None) -> list[dict]:
    try:
        return deadletters.list_letters(
            deployment.ports.bus, deployment.ports.blobs, deployment.ports.clock.now(), topic
        )
    except deadletters.UnknownTopic as error:
        raise typer.BadParameter(str(error)) from error


def _confirm(deployment: runtime.Runtime, topic: str, ids: list[str] | None, verb: str, yes: bool) -> None:
    """Name what the action touches and ask, unless --yes."""
    letters = [letter for letter in _letters(deployment, topic) if not ids or letter["id"] in ids]
    for letter in letters:
        where = f"{letter['dataset']}/{letter['city'] or '*'}"
        console.print(f"  {letter['id']}  {letter['kind']} {where}: {letter['error']}", soft_wrap=True)
    if not yes and not typer.confirm(f"{verb} {len(letters)} dead letter(s) of {topic}?"):
        raise typer.Abort()


def _missing_letters(wanted: list[str] | None, done: list[str]) -> None:
    missing = sorted(set(wanted or []) - set(done))
    if missing:
        console.print(f"not found (already handled?): {', '.join(missing)}", soft_wrap=True)
        raise typer.Exit(1)


stack_app = typer.Typer(help="The local emulator stack: fake-gcs-server, Pub/Sub emulator, functions.")
app.add_typer(stack_app, name="stack")
StackDir = Annotated[Path, typer.Option("--dir", help="Where the stack keeps its state, env.sh and logs.")]


@stack_app.command("up")
def stack_up(
    directory: StackDir = Path(".batchcast-stack"),
    gcs_port: Annotated[int, typer.Option(help="fake-gcs-server's port (0: any free port).")] = 4443,
    pubsub_port: Annotated[int, typer.Option(help="The Pub/Sub emulator's port (0: any free port).")] = 8085,
    functions_port: Annotated[
        int, typer.Option(help="First function's port; the others follow (0: any free ports).")
    ] = 8091,
    project: Annotated[str, typer.Option(help="The emulated project.")] = stack.PROJECT,
    bucket: Annotated[str, typer.Option(help="The emulated bucket.")] = stack.BUCKET,
    pubsub_emulator: Annotated[
        str | None, typer.Option(help="The emulator's launcher (default: found through gcloud).")
    ] = None,
    external_pubsub: Annotated[
        bool, typer.Option(help="Use the Pub/Sub emulator already listening on --pubsub-port.")
    ] = False,
) -> None:
    """Start the emulator stack and print the environment variables that talk to it."""
    ports = {name: functions_port + i if functions_port else 0 for i, name in enumerate(FUNCTIONS)}
    try:
        state = stack.up(
            directory,
            project=project,
            bucket=bucket,
            gcs_port=gcs_port,
            pubsub_port=pubsub_port,
            function_ports=ports,
            pubsub_emulator=pubsub_emulator,
            external_pubsub=external_pubsub,
        )
    except stack.StackError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    print(state.env_script(), end="")
    console.print(
        f"# also in {directory / stack.ENV_FILE} (source it); logs in {directory / 'logs'}/", highlight=False
    )


@stack_app.command("down")
def stack_down(directory: StackDir = Path(".batchcast-stack")) -> None:
    """Stop every process of the stack."""
    stopped = stack.down(directory)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no stack was running")


@stack_app.command("clock")
def stack_clock(
    directory: StackDir = Path(".batchcast-stack"),
    at: Annotated[
        datetime | None, typer.Option(help="Pin the functions' clock here (UTC unless an offset is given).")
    ] = None,
) -> None:
    """Set the time the stack's functions and jobs see; without --at, they follow the real clock."""
    state = stack.load(directory.resolve())
    if state is None:
        raise typer.BadParameter(f"no stack at {directory}")
    state.clock.set(job.aware(at))
    console.print(f"stack clock: {state.clock.now().isoformat() if at else 'the real clock'}")


@stack_app.command("status")
def stack_status(directory: StackDir = Path(".batchcast-stack")) -> None:
    """Show which processes of the stack run and where they log."""
    processes = stack.status(directory)
    if not processes:
        console.print(f"no stack at {directory}")
        raise typer.Exit(1)
    table = Table("process", "pid", "port", "state", "log")
    for process, alive in processes:
        state = "up" if alive else "DOWN"
        table.add_row(process.name, str(process.pid), str(process.port), state, process.log)
    console.print(table)
    if not all(alive for _, alive in processes):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
