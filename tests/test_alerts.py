"""Freshness, email alerts and status against a real SMTP server (aiosmtpd, started here).

Every test runs the embedded pipeline with ``BATCHCAST_SMTP_HOST`` pointing at an aiosmtpd server on
a free port, so emails go through smtplib, the SMTP protocol and back out of a real server's inbox.
"""

from __future__ import annotations

import io
import json
import os
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import typer
from factories import MODEL_VERSION, live_score, predict_request, seed_model
from typer.testing import CliRunner

from batchcast.backends.smtp import SmtpMailer, SmtpRejected
from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.core.obs import configure_logging
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops import metrics, models, training, views
from batchcast.ports import FixedClock, TransientError
from batchcast.tools import synth
from batchcast.tools.cli import app

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI") == "true":
        raise RuntimeError("aiosmtpd is missing: `pip install -e '.[test]'` installs it") from None
    pytest.skip("aiosmtpd is not installed", allow_module_level=True)

END = date(2026, 3, 1)
MIDNIGHT = datetime(2026, 3, 2, 0, 0, tzinfo=load_profile("retail").zone())  # the daily predict tick
CHECK = MIDNIGHT + timedelta(minutes=30)  # the schedule's freshness check
LATER = CHECK + timedelta(days=3)  # the check three days on, with no upload since
PUBLIC_URL = "https://forecasts.example.com"


# -- a real SMTP server ----------------------------------------------------------------------------


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every accepted email; ``refuse`` makes it answer RCPT with a 4xx."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    refuse: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        email = message_from_bytes(envelope.content, policy=policy.default)
        self.received.append((sorted(envelope.rcpt_tos), email))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """The emails whose envelope included ``address``."""
        return [email for rcpt, email in self.received if address in rcpt]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SmtpServer:
    """An aiosmtpd server that tests can stop and start again on the same port."""

    inbox: Inbox
    port: int
    options: dict = field(default_factory=dict)
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch):
    server = SmtpServer(Inbox(), _free_port())
    server.start()
    monkeypatch.setenv("BATCHCAST_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BATCHCAST_SMTP_PORT", str(server.port))
    monkeypatch.setenv("BATCHCAST_SMTP_STARTTLS", "false")
    monkeypatch.setenv("BATCHCAST_SMTP_SENDER", "batchcast@example.com")
    monkeypatch.setenv("BATCHCAST_PUBLIC_URL", PUBLIC_URL)
    yield server
    server.stop()


# -- a small retail deployment ---------------------------------------------------------------------


def _deployment(root: Path, clock: FixedClock, **options) -> runtime.Runtime:
    return runtime.embedded(root, clock=clock, backoff_seconds=0.001, **options)


def _upload(deployment: runtime.Runtime, stores: int, days: int, cities: tuple[str, ...]) -> list[dict]:
    """Upload ``stores`` retail stores of ``cities`` at midnight; return the store table.

    The caller drains the bus (the whole flow: partition, train, predict, notify)."""
    profile = load_profile("retail")
    frame = synth.generate(profile, 32, days, seed=5, end=END)  # then keep a few per city
    per_city = -(-stores // len(cities))
    kept = [s for c in cities for s in sorted(frame.loc[frame["city"] == c, "store_id"].unique())[:per_city]]
    kept = kept[:stores]
    frame = frame[frame["store_id"].isin(kept)]
    uploads.store_upload(
        deployment.ports.blobs,
        frame.to_csv(index=False).encode(),
        ext="csv",
        now=deployment.ports.clock.now(),
        dataset="retail",
    )
    stores_table = frame[["store_id", "city"]].drop_duplicates().sort_values("store_id")
    assert len(stores_table) == stores and set(stores_table["city"]) == set(cities)
    return stores_table.to_dict("records")


def _managers(deployment: runtime.Runtime, stores: list[dict], *, unmanaged: int = 0) -> dict[str, str]:
    """One manager per store (except the last ``unmanaged``); a bikeshare manager who must hear nothing."""
    managed = stores[: len(stores) - unmanaged]
    owners = {s["store_id"]: f"manager-{s['store_id']}@example.com" for s in managed}
    directory = {
        "ops": ["ops@example.com"],
        "datasets": {
            "retail": {store: [address] for store, address in owners.items()},
            "bikeshare": {"vancouver-001": ["bikes@example.com"]},
        },
    }
    deployment.ports.blobs.write(layout.MANAGERS, json.dumps(directory).encode())
    return owners


def _tick(deployment: runtime.Runtime, at: datetime, actions: tuple[str, ...] = ("notify",)) -> None:
    deployment.ports.clock.set(at)
    tick = ScheduleTick(dataset="retail", actions=list(actions), logical_time=at)
    deployment.ports.bus.publish(Topic.SCHEDULE, tick)
    deployment.bus.drain()


def _replay(deployment: runtime.Runtime) -> None:
    for entry in deployment.bus.log():
        deployment.bus.publish_raw(entry["topic"], entry["data"].encode(), entry["attributes"])
    deployment.bus.drain()


def _json(deployment: runtime.Runtime, name: str) -> dict:
    return json.loads(deployment.ports.blobs.read(name))


def _alerts(deployment: runtime.Runtime) -> dict:
    return _json(deployment, layout.alerts_object("retail"))


def _parts(email: EmailMessage) -> tuple[str, str]:
    assert email.get_content_type() == "multipart/alternative"
    return email.get_body(("plain",)).get_content(), email.get_body(("html",)).get_content()


# -- tests -----------------------------------------------------------------------------------------


def test_a_stale_store_emails_its_managers_once_and_ops_one_digest(tmp_path, smtp):
    clock = FixedClock(MIDNIGHT)
    deployment = _deployment(tmp_path, clock, deliver_twice=True)
    stores = _upload(deployment, 4, 40, ("berlin", "paris"))
    owners = _managers(deployment, stores, unmanaged=1)
    logs = io.StringIO()
    configure_logging(logs)
    deployment.bus.drain()
    assert smtp.inbox.received == []  # forecasts for the day that began: all fresh
    _tick(deployment, LATER)  # three days without an upload: every store is stale

    entities = _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["entities"]
    assert {s["reason"] for s in entities.values()} == {"no data uploaded since 2026-03-01"}
    for store, address in owners.items():
        [email] = smtp.inbox.to(address)  # delivered twice, still one email
        assert email["To"] == address and store in email["Subject"] and "stale" in email["Subject"]
        text, markup = _parts(email)
        link = f"{PUBLIC_URL}/?dataset=retail&entity={store}"
        assert link in text and f'href="{link}"' in markup.replace("&amp;", "&")
        assert "no data uploaded since 2026-03-01" in text
        assert "due for: 2026-03-05 00:00 CET" in text  # Berlin and Paris share the zone name
        assert "as of: 2026-03-02 00:00 CET" in text  # the forecast they still see, local time
    assert smtp.inbox.to("bikes@example.com") == []
    [digest] = smtp.inbox.to("ops@example.com")
    assert "4 stale stores" in digest["Subject"]  # retail's word for an entity (bike share: stations)
    assert all(s["store_id"] in _parts(digest)[0] for s in stores)  # the unmanaged store too
    assert len(smtp.inbox.received) == len(owners) + 1

    _replay(deployment)  # every message again, days later in a real system: no second copy
    _tick(deployment, LATER + timedelta(minutes=5))  # and another check of the same period
    assert len(smtp.inbox.received) == len(owners) + 1

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    [freshness_line, *_] = [line for line in lines if line.get("metric") == "batchcast_freshness"]
    assert freshness_line["stale"] == 0 and freshness_line["dataset"] == "retail"
    assert max(line["stale"] for line in lines if line.get("metric") == "batchcast_freshness") == 4
    runs = [line for line in lines if line.get("metric") == "batchcast_run"]
    assert {r["function"] for r in runs} >= {"partition", "train_trigger", "notify"}
    for line in runs:
        assert line["severity"] in ("INFO", "WARNING", "ERROR") and line["duration_seconds"] >= 0
        labels = line["logging.googleapis.com/labels"]
        assert labels["function"] == line["function"] and labels["run_id"]
    assert any(r["status"] == "succeeded" and r["function"] == "notify" for r in runs)


def test_a_store_stale_only_inside_the_grace_period_is_not_alerted(tmp_path, smtp):
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    stores = _upload(deployment, 2, 40, ("berlin",))
    _managers(deployment, stores)
    deployment.bus.drain()
    _tick(deployment, LATER - timedelta(minutes=25))  # five minutes after the forecast fell due
    assert _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["stale"] == 2
    assert [rcpt for rcpt, _ in smtp.inbox.received] == [["ops@example.com"]]  # the digest only
    assert _alerts(deployment)["episodes"] == {}


@pytest.mark.parametrize("outage", ["stopped", "refusing"])
def test_alerts_survive_an_smtp_outage_and_go_out_on_the_next_run(tmp_path, smtp, outage):
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    stores = _upload(deployment, 2, 40, ("berlin",))
    owners = _managers(deployment, stores)
    if outage == "stopped":
        smtp.stop()
    else:
        smtp.inbox.refuse = "451 4.3.0 mailbox busy, try later"
    deployment.bus.drain()
    _tick(deployment, LATER)
    notify = [r for f, r in deployment.results if f == "notify"][-1]
    assert notify.status == "partial" and "smtp" in notify.errors
    pending = _alerts(deployment)
    assert smtp.inbox.received == []
    for store in owners:
        email = pending["episodes"][store]["stale"]
        assert email["state"] == "pending" and email["attempts"] == 1 and email["last_error"]
    assert next(iter(pending["digests"].values()))["state"] == "pending"

    if outage == "stopped":
        smtp.start()
    smtp.inbox.refuse = None
    _tick(deployment, LATER + timedelta(hours=1))  # the next run: a later check of the same day
    for address in owners.values():
        assert len(smtp.inbox.to(address)) == 1
    assert len(smtp.inbox.to("ops@example.com")) == 1  # the pending digest, not a second one
    sent = _alerts(deployment)
    assert all(e["stale"]["state"] == "sent" for e in sent["episodes"].values())
    _tick(deployment, LATER + timedelta(hours=2))
    assert len(smtp.inbox.received) == len(owners) + 1


def test_a_store_that_recovers_before_its_alert_went_out_is_never_emailed(tmp_path, smtp):
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    stores = _upload(deployment, 2, 40, ("berlin",))
    owners = _managers(deployment, stores)
    deployment.bus.drain()
    smtp.stop()
    _tick(deployment, LATER)  # stale, but the alerts cannot go out
    assert all(e["stale"]["state"] == "pending" for e in _alerts(deployment)["episodes"].values())
    smtp.start()
    _tick(deployment, LATER + timedelta(minutes=5), actions=("predict",))  # fresh forecasts arrive first
    assert _alerts(deployment)["episodes"] == {}
    assert all(smtp.inbox.to(address) == [] for address in owners.values())
    assert [rcpt for rcpt, _ in smtp.inbox.received] == [["ops@example.com"]]  # the check's digest


def test_a_broken_manager_directory_leaves_freshness_written_and_alerts_pending(tmp_path, smtp):
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    _upload(deployment, 1, 40, ("berlin",))
    deployment.bus.drain()
    deployment.ports.blobs.write(layout.MANAGERS, b'{"ops": "not-a-list"}')
    _tick(deployment, LATER)
    notify = [r for f, r in deployment.results if f == "notify"][-1]
    assert notify.status == "partial" and "managers.json is invalid" in notify.errors["managers"]
    assert _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["stale"] == 1
    assert smtp.inbox.received == []
    assert all(e["stale"]["state"] == "pending" for e in _alerts(deployment)["episodes"].values())
    deployment.ports.blobs.write(layout.MANAGERS, b'{"ops": ["ops@example.com"]}')  # fixed
    _tick(deployment, LATER + timedelta(minutes=5))
    assert [rcpt for rcpt, _ in smtp.inbox.received] == [["ops@example.com"]]
    # The error itself, not rich's rendering of it: that wraps the message where the path ends.
    outcome = CliRunner().invoke(app, ["status", "--root", str(tmp_path / "nowhere")], standalone_mode=False)
    assert isinstance(outcome.exception, typer.BadParameter)
    assert str(outcome.exception) == f"{tmp_path / 'nowhere'} is not a batchcast root (no .batchcast/ inside)"


class _DyingMailer:
    """The real SMTP mailer, except that the process dies inside ``send``: before the server has
    the email, or (``accepted``) after the server accepted it; before the run can record either."""

    def __init__(self, mailer, accepted: bool) -> None:
        self.mailer, self.accepted = mailer, accepted

    def send(self, email: EmailMessage) -> None:
        if self.accepted:
            self.mailer.send(email)
        raise SystemExit("killed mid-send")


class _DyingBeforeTheAttempt:
    """The real store, except that the process dies as it records an email's send attempt."""

    def __init__(self, blobs) -> None:
        self.blobs = blobs

    def write(self, name, data, **kwargs):
        if "/alerts/attempts/" in name:
            raise SystemExit("killed before the attempt")
        return self.blobs.write(name, data, **kwargs)

    def __getattr__(self, name):
        return getattr(self.blobs, name)


# Where the run dies: (emails at the server after the lease, the email's state, said unconfirmed).
DEATHS = {
    "before the attempt": (1, "sent", False),  # never handed over: sent by the next run
    "in send": (0, "unconfirmed", True),  # the server may or may not have it: never twice
    "after the server accepted": (1, "unconfirmed", True),
}


@pytest.mark.parametrize("death", list(DEATHS))
def test_a_run_that_dies_while_sending_never_sends_an_email_twice(tmp_path, smtp, death):
    delivered, state, said = DEATHS[death]
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    stores = _upload(deployment, 1, 40, ("berlin",))
    [address] = _managers(deployment, stores).values()
    deployment.bus.drain()
    mailer, blobs = deployment.ports.mailer, deployment.ports.blobs
    if death == "before the attempt":
        deployment.ports.blobs = _DyingBeforeTheAttempt(blobs)
    else:
        deployment.ports.mailer = _DyingMailer(mailer, accepted=death == "after the server accepted")
    with pytest.raises(SystemExit):
        _tick(deployment, LATER)
    at_first = len(smtp.inbox.to(address))
    deployment.ports.mailer, deployment.ports.blobs = mailer, blobs
    _tick(deployment, LATER + timedelta(minutes=5))  # a concurrent or quick next run: claim is held
    assert len(smtp.inbox.to(address)) == at_first
    _tick(deployment, LATER + timedelta(minutes=15))  # the lease expired
    assert len(smtp.inbox.to(address)) == delivered
    [episode] = _alerts(deployment)["episodes"].values()
    assert episode["stale"]["state"] == state
    assert views.alert_state(episode, [address])["state"] == ("emailed" if state == "sent" else state)
    notes = [note for function, result in deployment.results if function == "notify" for note in result.notes]
    assert any("delivery unconfirmed: store:" in note for note in notes) is said
    _tick(deployment, LATER + timedelta(minutes=30))
    assert len(smtp.inbox.to(address)) == delivered


def test_predict_failing_for_one_city_alerts_its_managers_once_and_shows_in_status(tmp_path, smtp):
    profile = load_profile("retail")
    clock = FixedClock(MIDNIGHT)
    deployment = _deployment(tmp_path, clock, deliver_twice=True)
    stores = _upload(deployment, 6, 120, ("berlin", "munich"))
    owners = _managers(deployment, stores)
    by_city = {c: [s["store_id"] for s in stores if s["city"] == c] for c in ("berlin", "munich")}
    assert all(by_city.values())
    # Right after training, before any predict request is delivered, corrupt Munich's model file:
    # its checksum check fails, a permanent error: recorded and acknowledged, not retried.
    corrupted: dict[str, bytes] = {}

    def corrupt_munich(delivery, error, seconds) -> None:
        if delivery.subscription.startswith("train-trigger") and not corrupted:
            munich = models.latest(deployment.ports.blobs, profile, "munich")
            metadata = models.read_metadata(deployment.ports.blobs, profile, "munich", munich.version)
            name = layout.model_dir("retail", "munich", munich.version) + metadata["model_file"]
            corrupted[name] = deployment.ports.blobs.read(name)
            deployment.ports.blobs.write(name, corrupted[name][:-64] + b"\0" * 64)

    deployment.bus.listeners.append(corrupt_munich)
    deployment.bus.drain()
    [(model_file, healthy)] = corrupted.items()
    _tick(deployment, CHECK)

    entities = _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["entities"]
    for store in by_city["berlin"]:
        assert not entities[store]["stale"] and entities[store]["forecast_for"] == "2026-03-02T00:00:00"
        assert smtp.inbox.to(owners[store]) == []
    for store in by_city["munich"]:
        status = entities[store]
        assert status["stale"] and status["since"] == "2026-03-02T00:00:00"
        assert status["reason"].startswith("predict failed for city munich: ModelIntegrityError")
        assert "checksum" in status["reason"]
        [email] = smtp.inbox.to(owners[store])
        text, _ = _parts(email)
        assert "predict failed for city munich" in text and f"entity={store}" in text
    [digest] = smtp.inbox.to("ops@example.com")
    assert f"{len(by_city['munich'])} stale" in digest["Subject"]

    outcome = _json(deployment, layout.outcome_object("retail", "munich"))
    assert "checksum" in outcome["functions"]["predict"]["last_failure"]["error"]
    assert _json(deployment, layout.outcome_object("retail", "berlin"))["functions"]["predict"][
        "last_success"
    ]

    report = CliRunner().invoke(app, ["status", "--root", str(tmp_path), "--json"])
    assert report.exit_code == 0, report.output
    cities = json.loads(report.output)["datasets"]["retail"]["cities"]
    assert cities["munich"]["stale"] == sorted(by_city["munich"])
    assert cities["munich"]["last_failure"]["function"] == "predict"
    assert "checksum" in cities["munich"]["last_failure"]["error"]
    assert cities["munich"]["dead_letters"] == []  # nothing cycled through five retries
    assert cities["berlin"]["stale"] == [] and cities["berlin"]["last_failure"] is None
    table = CliRunner().invoke(app, ["status", "--root", str(tmp_path)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "munich" in table.output and "predict failed" in table.output

    # Repair the model: the next predict tick brings Munich back, and its managers hear it once.
    deployment.ports.blobs.write(model_file, healthy)
    _tick(deployment, CHECK + timedelta(minutes=15), actions=("predict",))
    _replay(deployment)
    for store in by_city["munich"]:
        stale, recovered = smtp.inbox.to(owners[store])
        assert "stale" in stale["Subject"] and "fresh again" in recovered["Subject"]
        assert "2026-03-02 00:45 CET" in _parts(recovered)[0]  # the new as-of, in Berlin time
    assert all(smtp.inbox.to(owners[s]) == [] for s in by_city["berlin"])
    assert _alerts(deployment)["episodes"] == {}


def test_a_drifting_city_puts_a_drift_section_in_the_ops_digest_once(tmp_path, smtp):
    """No store is stale (there are none): Berlin's live MASE is twice its backtest's, so the digest
    goes out with its drift section; Paris is within the margin; Munich and Cologne are noted."""
    profile = load_profile("retail")
    deployment = _deployment(tmp_path, FixedClock(CHECK), deliver_twice=True)
    blobs = deployment.ports.blobs
    seed_model(blobs, profile, "berlin", backtest_mase=0.8)
    seed_model(blobs, profile, "paris", backtest_mase=1.0)
    seed_model(blobs, profile, "munich", backtest_mase=1.0)
    day = CHECK.date()
    metrics.record_live(
        blobs, "retail", day, "berlin", "shard-0-of-2", live_score(1.6, points=70), MODEL_VERSION
    )
    metrics.record_live(
        blobs, "retail", day - timedelta(days=3), "berlin", "shard-1-of-2", live_score(1.6, 50), "v0"
    )
    metrics.record_live(blobs, "retail", day, "paris", "shard-0-of-1", live_score(1.1), MODEL_VERSION)
    metrics.record_live(
        blobs, "retail", day, "munich", "shard-0-of-1", live_score(9.0, points=10), MODEL_VERSION
    )
    blobs.write(layout.MANAGERS, json.dumps({"ops": ["ops@example.com"]}).encode())

    logs = io.StringIO()
    configure_logging(logs)
    _tick(deployment, CHECK)

    [digest] = smtp.inbox.to("ops@example.com")  # delivered twice, still one email
    assert digest["Subject"] == "[batchcast] retail: live accuracy drifting in 1 city"
    text, markup = _parts(digest)
    assert "stale" not in text
    berlin = "- berlin: live MASE 1.600 vs backtest MASE 0.800, P10-P90 coverage 80%, 120 points"
    assert f"{berlin}, model {MODEL_VERSION}" in text
    assert "paris" not in text and "munich" not in text  # within the margin; too few points
    assert "batchcast train --dataset retail --city <city>" in text and "check the recent uploads" in text
    assert "<td>berlin</td><td>1.600</td><td>0.800</td><td>80%</td><td>120</td>" in markup
    notify = [r for f, r in deployment.results if f == "notify"][-1]
    assert notify.counts["drifting"] == 1 and notify.details["live_accuracy"]["berlin"]["drifting"]
    assert notify.details["live_accuracy"]["paris"] | {"live_mae": None} == {
        "live_mase": 1.1,
        "live_coverage": 0.8,
        "live_mae": None,
        "points": 100,
        "backtest_mase": 1.0,
        "model_version": MODEL_VERSION,
        "drifting": False,
        "note": None,
    }
    assert sorted(notify.notes) == [
        "live accuracy of cologne not judged: no model trained yet",
        "live accuracy of munich not judged: 10 of 50 scored points in 28 days",
    ]

    [metric, *_] = [
        json.loads(line) for line in logs.getvalue().splitlines() if "batchcast_live_accuracy" in line
    ]
    assert metric["drifting"] == ["berlin"] and metric["live_mase"]["berlin"] == 1.6
    assert metric["live_mase"]["cologne"] is None

    _replay(deployment)  # every message again, and another check of the same period: no second email
    _tick(deployment, CHECK + timedelta(minutes=5))
    assert len(smtp.inbox.received) == 1

    report = CliRunner().invoke(app, ["status", "--root", str(tmp_path), "--json"])
    cities = json.loads(report.output)["datasets"]["retail"]["cities"]
    assert (
        cities["berlin"]["live_accuracy"]["drifting"]
        and cities["berlin"]["live_accuracy"]["live_mase"] == 1.6
    )
    assert not cities["paris"]["live_accuracy"]["drifting"]
    table = CliRunner().invoke(app, ["status", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = [" ".join(line.replace("│", " ").split()) for line in table.output.splitlines()]
    assert "retail berlin 1.60 0.80 80% 120 DRIFTING" in lines
    assert "retail cologne - - - 0 not judged: no model trained yet" in lines


# -- the SMTP mailer on its own: STARTTLS, login, refusals -----------------------------------------


def _email(to: str) -> EmailMessage:
    email = EmailMessage()
    email["To"], email["Subject"] = to, "hello"
    email.set_content("body")
    return email


@pytest.fixture
def tls_server():
    trustme = pytest.importorskip("trustme") if os.environ.get("CI") != "true" else __import__("trustme")
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"alerts" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    options = {
        "tls_context": server_context,
        "require_starttls": True,
        "authenticator": authenticate,
        "auth_required": True,
        "auth_require_tls": True,
    }
    server = SmtpServer(Inbox(), _free_port(), options)
    server.start()
    yield server, client_context
    server.stop()


def test_the_smtp_mailer_uses_starttls_and_logs_in(tls_server):
    server, context = tls_server
    mailer = SmtpMailer(
        "127.0.0.1", server.port, username="alerts", password="s3cret", sender="b@x.org", ssl_context=context
    )
    mailer.send(_email("anna@example.com"))
    [(rcpt, email)] = server.inbox.received
    assert rcpt == ["anna@example.com"] and email["From"] == "b@x.org"
    wrong = SmtpMailer("127.0.0.1", server.port, username="alerts", password="nope", ssl_context=context)
    with pytest.raises(SmtpRejected, match="535"):
        wrong.send(_email("anna@example.com"))
    untrusted = SmtpMailer("127.0.0.1", server.port, username="alerts", password="s3cret")
    with pytest.raises(TransientError):  # the system CAs do not know the test CA: TLS fails
        untrusted.send(_email("anna@example.com"))
    assert len(server.inbox.received) == 1


def test_the_smtp_mailer_turns_outages_into_transient_errors(smtp):
    mailer = SmtpMailer("127.0.0.1", smtp.port, starttls=False, timeout=5)
    smtp.inbox.refuse = "550 5.1.1 no such user"
    with pytest.raises(SmtpRejected, match="550"):
        mailer.send(_email("ghost@example.com"))
    smtp.stop()
    with pytest.raises(TransientError, match="unreachable"):
        mailer.send(_email("anna@example.com"))


def test_settings_choose_the_mailer(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCHCAST_SMTP_HOST", raising=False)
    assert not isinstance(runtime.embedded(tmp_path / "a").ports.mailer, SmtpMailer)
    monkeypatch.setenv("BATCHCAST_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("BATCHCAST_SMTP_PASSWORD", "hunter2")
    deployment = runtime.embedded(tmp_path / "b", clock=FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    mailer = deployment.ports.mailer
    assert isinstance(mailer, SmtpMailer) and mailer.host == "smtp.example.com" and mailer.port == 587
    assert "hunter2" not in repr(deployment.settings)


# -- reasons and status without email ------------------------------------------------------------


def test_a_failed_first_training_is_the_reason_and_status_shows_it(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCHCAST_SMTP_HOST", raising=False)
    monkeypatch.setattr(
        training, "_train_and_store", lambda *a, **k: (_ for _ in ()).throw(MemoryError("out of memory"))
    )
    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    _upload(deployment, 2, 40, ("berlin",))
    deployment.bus.drain()
    _tick(deployment, CHECK)
    entities = _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["entities"]
    assert {s["reason"] for s in entities.values()} == {
        "model training failed for city berlin: MemoryError: out of memory"
    }
    report = json.loads(CliRunner().invoke(app, ["status", "--root", str(tmp_path), "--json"]).output)
    berlin = report["datasets"]["retail"]["cities"]["berlin"]
    assert berlin["last_failure"]["function"] == "train_trigger"
    assert berlin["stale_reasons"] == {"model training failed for city berlin: MemoryError: out of memory": 2}
    assert report["datasets"]["retail"]["cities"]["*"]["last_success"]["function"] == "notify"


def test_long_runs_are_kept_in_the_outcomes_and_reported(tmp_path):
    from batchcast.ops import outcomes, status

    deployment = _deployment(tmp_path, FixedClock(MIDNIGHT))
    request = predict_request(city="paris", shards=1, entities=["7"], logical_time=MIDNIGHT)
    for run_id, seconds in (("r1", 12.0), ("r2", 734.5)):
        record = {
            "run_id": run_id,
            "function": "predict",
            "dataset": "retail",
            "city": "paris",
            "status": "succeeded",
            "started_at": MIDNIGHT.isoformat(),
            "duration_seconds": seconds,
            "error": None,
            "errors": {},
            "message": {"logical_time": MIDNIGHT.isoformat()},
        }
        outcomes.record_run(deployment.ports.blobs, record, request, None)
    document = status.collect(deployment.ports.blobs, deployment.bus.dead_letters)
    paris = document["datasets"]["retail"]["cities"]["paris"]
    assert [r["run_id"] for r in paris["long_runs"]] == ["r2"]
    assert paris["last_success"]["run_id"] == "r1"  # the same run's second shard wrote nothing new
    [row] = status.rows(document)
    assert row["long runs"] == "predict 734s"
