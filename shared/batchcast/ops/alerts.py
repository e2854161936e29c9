"""Email alerts: one email per store when it turns stale, one when it recovers, one ops digest per run.

Everything that must happen exactly once lives in the bucket, in ``status/alerts/dataset=<d>.json``
(updated by compare-and-swap only), never in a process:

* An **episode** opens when a store has been stale for longer than the grace period; its id is
  ``<entity>@<since>`` (since: the target period that fell due), so a redelivered or replayed check
  finds it open and opens nothing. It holds a ``stale`` email and, once the store is fresh again, a
  ``recovered`` email; it closes when that is sent (or silently, if the store recovered before anyone
  was told).
* An **ops digest** is keyed by the dataset's expected target period of the schedule tick that asked
  for the check: a second tick for the same period (a redelivery, a replay) finds it.
* Each email goes ``pending`` → ``sending`` (claimed by one run, in one CAS write, with a lease) →
  ``sent``. A send that fails (SMTP down, 4xx) puts it back to ``pending`` with the error, and the
  next notify run sends it; a run that crashed mid-send leaves a claim that expires after the lease.
* No email goes out twice. Just before a run hands an email to the SMTP server it writes an attempt
  object (``layout.alert_attempt``, create-only, one per email and claim). When a claim expires, an
  email without one was never handed over and is sent again; an email with one may have been
  accepted (the run died between the server's ``250`` and the write marking it sent) and becomes
  ``unconfirmed``: not sent again, counted as told, and named in the run's notes, its log and the
  console, so the one case that cannot be known from our side of SMTP is never silent.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, ValidationError

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.crashpoints import ALERT_CLAIMED, ALERT_SENT, crash_point
from batchcast.core.errors import ConfigError
from batchcast.data import storage
from batchcast.ops.freshness import Status
from batchcast.ports import Ports

CLAIM_LEASE = timedelta(minutes=10)  # a claim older than this belonged to a run that died
KEEP_DIGESTS = 30
KEEP_CLOSED = 50
MAX_PER_RUN = 200  # emails one run claims: well inside a function's 540 s, even on a slow server
MARK_EVERY = 10  # sends recorded per bucket write
TOLD = ("sent", "skipped", "unconfirmed")  # states after which an email is never sent again


class ManagerDirectory(BaseModel):
    """``config/managers.json``: who hears about which store.

    ``{"ops": ["ops@example.com"], "datasets": {"retail": {"berlin-001": ["anna@example.com"]}}}``
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ops: list[str] = []
    datasets: dict[str, dict[str, list[str]]] = {}

    def managers(self, dataset: str, entity: str) -> list[str]:
        """The addresses of the managers of one store (empty when nobody is configured)."""
        return sorted(set(self.datasets.get(dataset, {}).get(entity, [])))


def load_directory(ports: Ports) -> ManagerDirectory:
    """Read the manager directory; an absent one means nobody is emailed."""
    data = storage.read_json(ports.blobs, layout.MANAGERS)
    try:
        return ManagerDirectory.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(f"{layout.MANAGERS} is invalid: {error}") from error


@dataclass(frozen=True)
class Mailing:
    """Who is sending, and where the managers' page is."""

    sender: str
    public_url: str


# -- planning: open, recover and close episodes; add the digest ------------------------------------


def plan(
    current: dict | None,
    profile: Profile,
    statuses: dict[str, Status],
    now: datetime,
    grace: timedelta,
    digest_key: str | None,
    drifting: Sequence[dict[str, Any]] = (),
) -> dict:
    """The alerts document after this check (pure: the caller writes it by compare-and-swap).

    ``drifting``: a line per city whose live accuracy drifted (:mod:`batchcast.ops.drift`); the
    digest goes out when any store is stale or any city drifts.
    """
    document = current or {"dataset": profile.name, "episodes": {}, "digests": {}, "closed": []}
    episodes = {e: dict(v) for e, v in document["episodes"].items()}
    closed = list(document["closed"])
    for entity, status in statuses.items():
        episode = episodes.get(entity)
        if status["stale"] and episode is None:
            due = datetime.fromisoformat(status["expected"]).replace(tzinfo=profile.zone(status["city"]))
            if now >= due + grace:
                episodes[entity] = _open(entity, status, now)
        elif status["stale"] and episode is not None:
            episode.pop("recovered", None)  # stale again before the recovery went out: keep the episode
            if episode["stale"]["state"] == "pending":
                episode["reason"] = status["reason"]  # nobody was told yet: tell the latest cause
        elif episode is not None:
            if episode["stale"]["state"] == "pending":
                closed.append(_summary(episodes.pop(entity), "recovered before anyone was told"))
            elif "recovered" not in episode:
                episode["recovered"] = _email() | {
                    "as_of": status["as_of"],
                    "forecast_for": status["forecast_for"],
                }
    for entity in [e for e in episodes if e not in statuses]:  # the store left the data
        closed.append(_summary(episodes.pop(entity), "store no longer in the data"))
    digests = dict(document["digests"])
    stale = sorted(e for e, s in statuses.items() if s["stale"])
    if digest_key and digest_key not in digests and (stale or drifting):
        digests[digest_key] = _email() | {
            "checked_at": now.isoformat(),
            "stores": [_digest_line(e, statuses[e]) for e in stale],
            "drift": list(drifting),
        }
        digests = dict(sorted(digests.items())[-KEEP_DIGESTS:])
    return document | {"episodes": episodes, "digests": digests, "closed": closed[-KEEP_CLOSED:]}


def _email() -> dict[str, Any]:
    return {"state": "pending", "attempts": 0}


def _open(entity: str, status: Status, now: datetime) -> dict:
    return {
        "id": f"{entity}@{status['since'] or status['expected']}",
        "city": status["city"],
        "since": status["since"] or status["expected"],
        "reason": status["reason"],
        "as_of": status["as_of"],
        "opened_at": now.isoformat(),
        "stale": _email(),
    }


def _summary(episode: dict, how: str) -> dict:
    return {"id": episode["id"], "closed": how}


def _digest_line(entity: str, status: Status) -> dict:
    return {k: status[k] for k in ("city", "since", "reason", "as_of")} | {"entity": entity}


# -- delivery: claim, send, mark -------------------------------------------------------------------


@dataclass
class Delivery:
    """What one run's delivery did."""

    # Keys: "store:<entity>:stale", "store:<entity>:recovered", "digest:<expected period>".
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # nobody to send to
    # Claims of a run that died after handing these to the SMTP server: not sent again.
    unconfirmed: list[str] = field(default_factory=list)
    error: str | None = None  # the first send failure; what was not sent stays pending


def _due(document: dict, now: datetime) -> Iterator[tuple[str, dict]]:
    """(key, email state) of every email that should go out now, in a stable order."""

    def ready(email: dict) -> bool:
        if email["state"] == "pending":
            return True
        expired = (
            email["state"] == "sending" and datetime.fromisoformat(email["claimed_at"]) + CLAIM_LEASE <= now
        )
        return expired

    for entity, episode in sorted(document["episodes"].items()):
        if ready(episode["stale"]):
            yield f"store:{entity}:stale", episode["stale"]
        # A recovery waits until the stale email is out: a manager never hears "fresh again" alone.
        told = episode["stale"]["state"] in TOLD
        if "recovered" in episode and told and ready(episode["recovered"]):
            yield f"store:{entity}:recovered", episode["recovered"]
    for key, digest in sorted(document["digests"].items()):
        if ready(digest):
            yield f"digest:{key}", digest


def _email_state(document: dict, key: str) -> dict:
    kind, rest = key.split(":", 1)
    if kind == "digest":
        return document["digests"][rest]
    entity, what = rest.rsplit(":", 1)
    return document["episodes"][entity][what]


def deliver(ports: Ports, profile: Profile, mailing: Mailing, run_id: str) -> Delivery:
    """Send every pending email of the dataset, each at most once across concurrent runs."""
    name = layout.alerts_object(profile.name)
    now = ports.clock.now()
    directory = load_directory(ports)  # before claiming: a broken directory must leave emails pending
    claimed: list[str] = []
    delivery = Delivery()
    handed_over: dict[tuple[str, str], bool] = {}  # (key, dead run): did it hand the email over?

    def was_handed_over(key: str, run: str) -> bool:
        if (key, run) not in handed_over:  # asked once, however often the compare-and-swap retries
            attempt = layout.alert_attempt(profile.name, key, run)
            handed_over[(key, run)] = ports.blobs.stat(attempt) is not None
        return handed_over[(key, run)]

    def claim(current: dict | None) -> dict | None:
        claimed.clear()
        delivery.unconfirmed.clear()
        if not current:
            return None
        document = _copy(current)
        for key, email in list(_due(document, now))[:MAX_PER_RUN]:
            # A due "sending" email is a dead run's claim, past its lease.
            if email["state"] == "sending" and was_handed_over(key, email["claimed_by"]):
                _unconfirmed(document, key, email, now)
                delivery.unconfirmed.append(key)
                continue
            email.update(state="sending", claimed_by=run_id, claimed_at=now.isoformat())
            claimed.append(key)
        return document if claimed or delivery.unconfirmed else None

    document = storage.update_json(ports.blobs, name, claim)
    if not claimed:
        return delivery
    crash_point(ALERT_CLAIMED, profile.name)
    done: dict[str, tuple[str, str | None]] = {}  # key -> (new state, error), written in batches
    for index, key in enumerate(claimed):
        email = _compose(profile, mailing, directory, document, key)
        if email is None:
            done[key] = ("skipped", None)
            delivery.skipped.append(key)
            continue
        try:
            _record_attempt(ports, layout.alert_attempt(profile.name, key, run_id), email, now)
            ports.mailer.send(email)
        except Exception as error:
            # Down, busy (TransientError) or refusing (a 5xx the operator must fix): release this
            # claim and the rest, so the emails stay pending and the next run tries again.
            reason = f"{type(error).__name__}: {error}"
            delivery.error = f"{key}: {reason}"
            done |= {left: ("pending", reason) for left in claimed[index:]}
            break
        crash_point(ALERT_SENT, profile.name)
        done[key] = ("sent", None)
        delivery.sent.append(key)
        if len(done) >= MARK_EVERY:
            # One object takes about one write per second: mark sends in small batches, not
            # one by one (a crash re-sends at most this batch, after the lease).
            _finish(ports, name, run_id, done, now)
            done = {}
    _finish(ports, name, run_id, done, now)
    return delivery


def _record_attempt(ports: Ports, name: str, email: EmailMessage, now: datetime) -> None:
    record = {"message_id": email["Message-ID"], "to": email["To"], "at": now.isoformat()}
    storage.write_once(ports.blobs, name, storage.dumps(record), content_type="application/json")


def _unconfirmed(document: dict, key: str, email: dict, now: datetime) -> None:
    """A dead run's claim that had handed the email to the SMTP server: never sent a second time."""
    email.update(state="unconfirmed", unconfirmed_at=now.isoformat(), attempts=email.get("attempts", 0) + 1)
    email["last_error"] = (
        f"run {email['claimed_by']} died after handing this email to the SMTP server and before "
        "recording the answer; not sent again, so it may not have arrived (check the server's log)"
    )
    email.pop("claimed_at", None)
    if key.endswith(":recovered"):
        _close(document, key)


def _finish(
    ports: Ports, name: str, run_id: str, done: dict[str, tuple[str, str | None]], when: datetime
) -> None:
    """Record what became of claimed emails: sent, skipped (no recipients) or pending again."""

    def mark(current: dict | None) -> dict | None:
        document = _copy(current or {})
        changed = False
        for key, (state, error) in done.items():
            try:
                email = _email_state(document, key)
            except KeyError:
                continue  # the episode was closed meanwhile
            if email.get("claimed_by") != run_id or email["state"] != "sending":
                continue  # our claim expired and another run took it over
            email.update(state=state, attempts=email.get("attempts", 0) + 1)
            email.pop("claimed_by", None)
            email.pop("claimed_at", None)
            if state == "sent":
                email["sent_at"] = when.isoformat()
            if error:
                email["last_error"] = error[:500]
            if state in ("sent", "skipped") and key.endswith(":recovered"):
                _close(document, key)
            changed = True
        return document if changed else None

    if done:
        storage.update_json(ports.blobs, name, mark)


def _close(document: dict, key: str) -> None:
    entity = key.removeprefix("store:").removesuffix(":recovered")
    episode = document["episodes"].pop(entity)
    document["closed"] = [*document["closed"], _summary(episode, "recovered")][-KEEP_CLOSED:]


def _copy(document: dict) -> dict:
    # Deep enough for the nested email states we mutate.
    copied = dict(document)
    copied["episodes"] = {
        e: {k: dict(v) if isinstance(v, dict) else v for k, v in episode.items()}
        for e, episode in document.get("episodes", {}).items()
    }
    copied["digests"] = {k: dict(v) for k, v in document.get("digests", {}).items()}
    copied["closed"] = list(document.get("closed", []))
    return copied


# -- composing: plain text and HTML ----------------------------------------------------------------


def store_link(public_url: str, dataset: str, entity: str) -> str:
    """The managers' page of one store."""
    return f"{public_url.rstrip('/')}/?{urlencode({'dataset': dataset, 'entity': entity})}"


def local_time(profile: Profile, city: str, moment: str | None) -> str:
    """An ISO moment as the store's wall-clock time with its zone, e.g. ``2026-03-02 00:00 CET``."""
    if not moment:
        return "never"
    parsed = datetime.fromisoformat(moment)
    zone = profile.zone(city)
    # Target periods are naive wall-clock times of the city already; as-of times are instants.
    local = parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M %Z}"


def _compose(
    profile: Profile, mailing: Mailing, directory: ManagerDirectory, document: dict, key: str
) -> EmailMessage | None:
    if key.startswith("digest:"):
        recipients = sorted(set(directory.ops))
        text, markup, subject = _digest_body(
            profile, mailing, document["digests"][key.removeprefix("digest:")]
        )
        identity = f"{profile.name}/{key}"
    else:
        entity, what = key.removeprefix("store:").rsplit(":", 1)
        episode = document["episodes"][entity]
        recipients = directory.managers(profile.name, entity)
        text, markup, subject = _episode_body(profile, mailing, entity, episode, what)
        identity = f"{profile.name}/{episode['id']}/{what}"
    if not recipients:
        return None
    email = EmailMessage()
    email["From"] = mailing.sender
    email["To"] = ", ".join(recipients)
    email["Subject"] = subject
    email["Message-ID"] = f"<{hashlib.sha256(identity.encode()).hexdigest()[:32]}@batchcast>"
    email["X-Batchcast-Alert"] = identity
    email.set_content(text)
    email.add_alternative(markup, subtype="html")
    return email


def _episode_body(
    profile: Profile, mailing: Mailing, entity: str, episode: dict, what: str
) -> tuple[str, str, str]:
    city = episode["city"]
    link = store_link(mailing.public_url, profile.name, entity)
    word = profile.entity_word  # the dataset's word: store, station
    store = f"{word} {entity} ({city})"
    if what == "stale":
        subject = f"[batchcast] {profile.name} {entity}: forecast is stale"
        lines = [
            f"The forecast for {store} is stale.",
            f"Reason: {episode['reason']}",
            f"Forecast due for: {local_time(profile, city, episode['since'])}",
            f"The numbers you see are as of: {local_time(profile, city, episode['as_of'])}",
        ]
    else:
        recovered = episode["recovered"]
        subject = f"[batchcast] {profile.name} {entity}: forecast is fresh again"
        lines = [
            f"The forecast for {store} is fresh again.",
            f"It is now as of: {local_time(profile, city, recovered['as_of'])}",
            f"and covers: {local_time(profile, city, recovered['forecast_for'])}",
            f"(it had been stale since {local_time(profile, city, episode['since'])}: {episode['reason']})",
        ]
    text = "\n".join([*lines, "", f"{word.capitalize()} page: {link}", ""])
    items = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    markup = f'<html><body>{items}<p><a href="{html.escape(link)}">Open the {word} page</a></p></body></html>'
    return text, markup, subject


def _digest_body(profile: Profile, mailing: Mailing, digest: dict) -> tuple[str, str, str]:
    stores, drift = digest["stores"], digest.get("drift", [])  # digests planned before drift: none
    headline, sections = [], []
    if stores:
        headline.append(f"{len(stores)} stale {profile.entity_word}s")
        sections.append(_stale_section(profile, mailing, digest))
    if drift:
        headline.append(f"live accuracy drifting in {len(drift)} {'city' if len(drift) == 1 else 'cities'}")
        sections.append(_drift_section(profile, drift))
    text = "\n".join(part for part, _ in sections)
    markup = "<html><body>" + "".join(part for _, part in sections) + "</body></html>"
    return text, markup, f"[batchcast] {profile.name}: {', '.join(headline)}"


def _stale_section(profile: Profile, mailing: Mailing, digest: dict) -> tuple[str, str]:
    stores, word = digest["stores"], profile.entity_word
    lines = [f"{len(stores)} {profile.name} {word}s are stale (checked {digest['checked_at']}):", ""]
    rows = []
    for store in stores:
        link = store_link(mailing.public_url, profile.name, store["entity"])
        since = local_time(profile, store["city"], store["since"])
        as_of = local_time(profile, store["city"], store["as_of"])
        lines.append(f"- {store['entity']} ({store['city']}) since {since}, as of {as_of}: {store['reason']}")
        lines.append(f"  {link}")
        cells = (store["entity"], store["city"], since, as_of, store["reason"])
        rows.append(
            f'<tr><td><a href="{html.escape(link)}">{html.escape(cells[0])}</a></td>'
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:])
            + "</tr>"
        )
    header = "".join(f"<th>{h}</th>" for h in (word, "city", "stale since", "as of", "reason"))
    markup = f"<p>{html.escape(lines[0])}</p><table><tr>{header}</tr>{''.join(rows)}</table>"
    return "\n".join(lines) + "\n", markup


def _drift_section(profile: Profile, drift: list[dict[str, Any]]) -> tuple[str, str]:
    """Per drifting city: live MASE against the backtest's, coverage, points, model, what to do."""
    days = profile.monitoring.live_window_days
    lines = [
        f"Live accuracy of {profile.name} drifted from the backtest (last {days} days, "
        f"alert above {profile.monitoring.drift_margin:.0%} worse):",
        "",
    ]
    rows = []
    for city in drift:
        coverage = "-" if city["live_coverage"] is None else f"{city['live_coverage']:.0%}"
        cells = (
            city["city"],
            f"{city['live_mase']:.3f}",
            f"{city['backtest_mase']:.3f}",
            coverage,
            str(city["points"]),
            city["model_version"],
        )
        lines.append(
            f"- {cells[0]}: live MASE {cells[1]} vs backtest MASE {cells[2]}, "
            f"P10-P90 coverage {coverage}, {cells[4]} points, model {cells[5]}"
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    advice = (
        "What to do: check the recent uploads of these cities for wrong values, units or missing "
        "days; if the data is right, the pattern changed: retrain "
        f"(`batchcast train --dataset {profile.name} --city <city>`, or a scheduled train tick)."
    )
    lines += ["", advice]
    header = "".join(
        f"<th>{h}</th>" for h in ("city", "live MASE", "backtest MASE", "live coverage", "points", "model")
    )
    markup = (
        f"<p>{html.escape(lines[0])}</p><table><tr>{header}</tr>{''.join(rows)}</table>"
        f"<p>{html.escape(advice)}</p>"
    )
    return "\n".join(lines) + "\n", markup
