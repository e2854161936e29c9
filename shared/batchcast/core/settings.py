"""Deployment settings from ``BATCHCAST_*`` environment variables: backend, bucket, limits, email.

Kept apart from profiles (:mod:`batchcast.core.config`) so that every process can read its settings
without loading the profile models and the schemas they check against.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from batchcast.core.errors import ConfigError


class Settings(BaseModel):
    """Deployment settings, read from ``BATCHCAST_*`` environment variables (never from the repo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["embedded", "gcp"] = "embedded"
    root: Path = Path("batchcast-data")  # embedded: the directory that plays the bucket
    bucket: str = "embedded"  # gcp: the bucket name
    project: str | None = None  # gcp: the project of the topics
    region: str | None = None  # gcp: where functions and jobs run
    # gcp: the Cloud Run job long trainings run in: its name (in BATCHCAST_PROJECT and _REGION) or
    # projects/P/locations/R/jobs/J. Unset: a local ``batchcast train`` process (the emulator stack).
    train_job: str | None = None
    # Events published longer ago than this are acknowledged without work, so a message that
    # somehow keeps coming back (Eventarc retries storage events for a day) stops costing runs.
    max_event_age_seconds: int = Field(default=86_400, ge=1)
    max_attempts: int = Field(default=5, ge=1)  # embedded bus: deliveries before dead-lettering
    # Partition rejects a larger upload whole, unread, asking for it to be split. Its memory stays
    # flat at any size; its time does not: a 2 GiB file of rows needs ~500 s of its 540 s (README).
    max_upload_bytes: int = Field(default=2**30, ge=1)
    # Partition validates an upload this many bytes at a time; its memory grows with it
    # (bench/partition_memory.py measures both).
    partition_chunk_bytes: int = Field(default=8 * 2**20, ge=1)
    now: AwareDatetime | None = None  # pin the clock (tests, demos, reruns); None: the real clock
    # A file holding the time (batchcast.ports.FileClock), read at every look at the clock, so
    # long-running functions (the emulator stack) follow a scenario over several days. Wins over now.
    clock_file: Path | None = None
    # The bearer-token map's JSON (see batchcast.ops.tokens), injected from Secret Manager; when empty
    # the map is read from the bucket object config/api_tokens.json. It holds digests, never tokens.
    api_tokens: str = ""
    # Email (issue 5). No host: the embedded backend writes emails to its outbox instead.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")  # from Secret Manager; SecretStr keeps it out of reprs
    smtp_sender: str = "batchcast@localhost"
    public_url: str = "http://localhost:8080"  # base URL of the managers' page, for links in emails
    # A store stale for less than this after its forecast fell due is not alerted yet: forecasts of
    # other cities are still arriving (the schedule checks freshness 30 minutes after predicting).
    alert_grace_minutes: int = Field(default=20, ge=0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read each field from ``BATCHCAST_<FIELD>`` (e.g. ``BATCHCAST_ROOT``, ``BATCHCAST_NOW``)."""
        env = os.environ if environ is None else environ
        values = {
            field: env[f"BATCHCAST_{field.upper()}"]
            for field in cls.model_fields
            if f"BATCHCAST_{field.upper()}" in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(f"invalid BATCHCAST_* settings: {error}") from error
