"""How failures are classified, so a run knows whether trying again can help.

A :class:`PermanentError` says the same message would fail the same way on every delivery: a
contract broken, a profile invalid, a stored model that does not match its checksum, an object that
exists with other content. The runtime records such a run as failed (the run record, the outcome
documents and so freshness reasons name it) and acknowledges the message instead of letting Pub/Sub
redeliver it into the dead-letter topic. Anything else (``TransientError``, network errors, an
unexpected exception) is re-raised so the platform retries it.
"""

from __future__ import annotations


class PermanentError(Exception):
    """A failure that retrying the same message cannot fix.

    ``dataset`` and ``city`` say whom it concerns when the message alone does not (an upload's
    dataset is unknown until its profile is chosen), so the run record is never anonymous.
    """

    def __init__(self, *args: object, dataset: str | None = None, city: str | None = None) -> None:
        super().__init__(*args)
        self.dataset = dataset
        self.city = city


class ConfigError(PermanentError, ValueError):
    """A profile or setting is invalid; the message says which and why."""
