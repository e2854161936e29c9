"""Crashes: a process killed (SIGKILL) at chosen points inside each step, restarted, redelivered.

The crash points (:mod:`batchcast.core.crashpoints`, chosen with ``BATCHCAST_CRASH_AT``) sit after
a step's writes and before its publish, between the read and the write of a compare-and-swap, between
a compaction's segment write and its manifest swap, and inside an alert send (emails claimed, none
sent; one email accepted by the SMTP server, not yet marked sent).

On the embedded backend the flow runs in a subprocess (tests/crash_targets/embedded_flow.py) with a
pinned clock, so a crashed-and-recovered run can be compared byte for byte with a clean one. On the
emulator stack a function's worker is killed and Pub/Sub's redelivery finishes the work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest

from batchcast.core import crashpoints, layout
from batchcast.core.config import load_profile
from batchcast.tools import synth

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI") == "true":
        raise RuntimeError("aiosmtpd is missing: `pip install -e '.[test]'` installs it") from None
    pytest.skip("aiosmtpd is not installed", allow_module_level=True)

pytestmark = pytest.mark.slow

FLOW = Path(__file__).parent / "crash_targets" / "embedded_flow.py"
ZONE = load_profile("retail").zone()
DATASET = "crashretail"
END = date(2026, 3, 1)  # the history's last day
DAILY = 7  # with the history's file, the daily store reaches 8 upload files: compaction
# Outputs a clean run and a recovered one must hold byte for byte (run records, processed markers
# and alert bookkeeping carry run ids, which differ between any two runs).
COMPARED = ("batch_data/", "manifests/", "future/", "models/", "predictions/", "results/", "metrics/")
# A model file's bytes differ between two trainings on the same data (and so its name, recorded in
# metadata.json with the training's duration); the version, the backtest and every prediction it
# makes are the same, and those are compared.
MODEL_FILES = ("model-", "metadata.json")
CRASHES = [
    f"{crashpoints.COMPARE_AND_SWAP}=manifests/",  # partition recording an upload's files
    f"{crashpoints.BEFORE_PUBLISH}=partition",  # an upload's files written, partitions-ready not sent
    f"{crashpoints.BEFORE_PUBLISH}=predict",  # predictions and results written, nothing published
    crashpoints.COMPACTION,  # the daily store's segment written, the manifest not swapped yet
    crashpoints.ALERT_CLAIMED,  # the stale emails claimed, none sent
    crashpoints.ALERT_SENT,  # one email accepted by the server, not marked sent
]


@pytest.fixture
def plan(tmp_path, profile_writer) -> Path:
    """History for two stores per city, then one store's daily uploads, then stale checks.

    The profile is retail's with a cheaper model and two cities (it trains twice per test)."""
    directory = tmp_path / "plan"
    directory.mkdir()
    profile = load_profile(str(profile_writer(directory, DATASET)))
    frame = synth.generate(profile, 32, 40 + DAILY, seed=5, end=END + timedelta(days=DAILY))
    cities = ("berlin", "munich")
    kept = [s for c in cities for s in sorted(frame.loc[frame["city"] == c, "store_id"].unique())[:2]]
    frame = frame[frame["store_id"].isin(kept)]
    dates = frame["date"].astype(str)
    history = directory / "history.csv"
    frame[dates <= str(END)].to_csv(history, index=False)
    midnight = datetime.combine(END + timedelta(days=1), datetime.min.time(), tzinfo=ZONE)
    actions = [{"at": midnight.isoformat(), "upload": str(history), "id": "history"}]
    daily_store = kept[0]
    for day in range(1, DAILY + 1):
        rows = frame[(frame["store_id"] == daily_store) & (dates == str(END + timedelta(days=day)))]
        path = directory / f"day-{day}.csv"
        rows.to_csv(path, index=False)
        evening = midnight + timedelta(days=day - 1, hours=21)
        actions.append({"at": evening.isoformat(), "upload": str(path), "id": f"day-{day}"})
    check = midnight + timedelta(days=DAILY + 3, minutes=30)  # three days on: every store is stale
    # The same checks later: past the claim lease (10 min), what a killed run had claimed goes out.
    for minutes in (0, 15, 30):
        actions.append({"at": (check + timedelta(minutes=minutes)).isoformat(), "tick": ["notify"]})
    managers = {
        "ops": ["ops@example.com"],
        "datasets": {DATASET: {store: [f"manager-{store}@example.com"] for store in kept}},
    }
    path = directory / "plan.json"
    path.write_text(json.dumps({"dataset": DATASET, "managers": managers, "actions": actions}))
    return path


class MessageIds:
    """aiosmtpd handler: the Message-ID of every email the server accepted, in order."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(message_from_bytes(envelope.content)["Message-ID"])
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(MessageIds(), hostname="127.0.0.1", port=port)
    controller.start()
    yield controller
    controller.stop()


def _run_flow(root: Path, plan: Path, smtp: Controller, crash_at: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "BATCHCAST_SMTP_HOST": "127.0.0.1",
        "BATCHCAST_SMTP_PORT": str(smtp.port),
        "BATCHCAST_SMTP_STARTTLS": "false",
        "BATCHCAST_SMTP_SENDER": "batchcast@example.com",
        "BATCHCAST_CRASH_AT": ",".join(crash_at),
        "BATCHCAST_CRASH_DIR": str(root / "crashes"),
        "BATCHCAST_PROFILE_DIR": str(plan.parent),
    }
    (root / "crashes").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, str(FLOW), str(root), str(plan)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _outputs(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for prefix in COMPARED
        for path in sorted((root / prefix).rglob("*"))
        if path.is_file() and not path.name.startswith((".", *MODEL_FILES))
    }


@pytest.mark.timeout(900)  # two whole runs and six restarts: about three minutes on 2 idle cores
def test_a_killed_process_recovers_by_redelivery_with_a_clean_runs_outputs(tmp_path, plan, smtp):
    clean = _run_flow(tmp_path / "clean", plan, smtp, [])
    assert clean.returncode == 0, clean.stderr[-3000:]
    clean_mail = Counter(smtp.handler.received)
    assert clean_mail and max(clean_mail.values()) == 1  # 4 stale stores' managers and the ops digest
    smtp.handler.received.clear()

    root, kills = tmp_path / "crashed", 0
    while (run := _run_flow(root, plan, smtp, CRASHES)).returncode == -signal.SIGKILL:
        kills += 1
        assert kills <= len(CRASHES), "a crash point fired twice"
    assert run.returncode == 0, run.stderr[-3000:]
    assert kills == len(CRASHES)  # every point was reached and killed the process once
    assert len(list((root / "crashes").iterdir())) == len(CRASHES)

    clean_outputs, recovered = _outputs(tmp_path / "clean"), _outputs(root)
    assert any(name.startswith("batch_data/") and "segment-" in name for name in clean_outputs)
    assert sorted(recovered) == sorted(clean_outputs)
    assert [n for n in clean_outputs if clean_outputs[n] != recovered[n]] == []
    freshness = layout.FRESHNESS
    assert (root / freshness).read_bytes() == (tmp_path / "clean" / freshness).read_bytes()

    mail = Counter(smtp.handler.received)
    # Every email went out, to the same people, once: the one the SMTP server had accepted when
    # the process died is not sent again after the claim lease (its attempt was recorded).
    assert mail == clean_mail


# -- on the emulator stack -------------------------------------------------------------------------

STACK_CRASHES = [
    f"{crashpoints.COMPARE_AND_SWAP}=manifests/",  # partition, between reading and writing a manifest part
    f"{crashpoints.BEFORE_PUBLISH}=partition",  # the upload's files written, partitions-ready not sent
    f"{crashpoints.BEFORE_PUBLISH}=predict",  # predictions and results written, nothing published
]


@pytest.fixture(scope="module")
def crashing_stack(tmp_path_factory, emulator_prerequisites):
    """A stack of its own whose functions' workers are killed once at each of ``STACK_CRASHES``
    (gunicorn starts a new worker, as Cloud Run starts a new instance)."""
    from batchcast.tools import stack

    directory = tmp_path_factory.mktemp("crashing-stack")
    profiles = directory / "profiles"
    profiles.mkdir()
    crashes = directory / "crashes"
    crashes.mkdir()
    env = {
        "BATCHCAST_CRASH_AT": ",".join(STACK_CRASHES),
        "BATCHCAST_CRASH_DIR": str(crashes),
        "BATCHCAST_PROFILE_DIR": str(profiles),
    }
    state = stack.up(directory, extra_env=env)
    try:
        yield state, profiles, crashes
    finally:
        stack.down(directory)


@pytest.mark.timeout(900)  # a stack of its own, redeliveries after 1-10 s backoffs
def test_a_function_killed_on_the_stack_is_redelivered_and_ends_as_a_clean_run(
    crashing_stack, profile_writer, tmp_path, monkeypatch
):
    from batchcast.backends.gcp import GcsBlobStore, PubSubBus
    from batchcast.core.messages import Topic
    from batchcast.data import uploads
    from batchcast.entrypoints import runtime
    from batchcast.ports import FixedClock

    state, profiles, crashes = crashing_stack
    profile = load_profile(str(profile_writer(profiles, "crashstack", sales_column="takings")))
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(profiles))
    load_profile.cache_clear()
    frame = synth.generate(profile, 6, 40, seed=3, end=date.today() - timedelta(days=1))
    data = frame.rename(columns={"sales": "takings"}).to_csv(index=False).encode()
    stores = sorted(frame["store_id"].astype(str).unique())
    for name, value in state.env().items():
        monkeypatch.setenv(name, value)
    blobs = GcsBlobStore(state.bucket, state.project)
    name = uploads.store_upload(blobs, data, ext="csv", now=datetime.now(UTC), upload_id="crash-history")
    wanted = {layout.results_object(profile.name, profile.entity_key, s) for s in stores}
    deadline = time.monotonic() + 240
    while not wanted <= {i.name for i in blobs.list(layout.results_prefix(profile.name))}:
        assert time.monotonic() < deadline, f"no forecast for {wanted} within 240 s after the crashes"
        time.sleep(2)
    time.sleep(3)  # the last predict's run record and publish follow its results

    assert len(list(crashes.iterdir())) == len(STACK_CRASHES)  # each point killed a worker once
    records = [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]
    records = [r for r in records if r["dataset"] == profile.name]
    assert [r for r in records if r["status"] == "failed"] == []  # a killed run leaves no record at all
    bus = PubSubBus(state.project)
    letters = [
        d for t in Topic for d in bus.dead_letters(t) if d["message"] and d["message"].dataset == profile.name
    ]
    bus.close()
    assert letters == []

    # The same upload at the same logical time, with no crash, on the embedded backend: the same
    # rows, manifests and forecasts, byte for byte.
    logical = blobs.stat(name).updated
    clean = runtime.embedded(tmp_path / "clean", clock=FixedClock(logical))
    uploads.store_upload(clean.ports.blobs, data, ext="csv", now=logical, upload_id="crash-history")
    clean.bus.drain()
    for prefix in ("batch_data/", "manifests/", "predictions/", "results/"):
        scope = f"{prefix}dataset={profile.name}/"
        expected = {i.name: clean.ports.blobs.read(i.name) for i in clean.ports.blobs.list(scope)}
        assert expected, f"the clean run wrote nothing under {scope}"
        assert {i.name: blobs.read(i.name) for i in blobs.list(scope)} == expected, scope
