"""The Mailer port over SMTP, with the standard library's smtplib.

One connection per email (alerts are few; a long-lived connection would only time out between
runs). STARTTLS and login follow the settings; the password comes from the environment / Secret
Manager. What a retry could fix — a refused or dropped connection, a timeout, any 4xx reply — is
raised as :class:`TransientError`, so the alert stays pending and the next run sends it; a 5xx
(bad credentials, a refused sender) is raised as :class:`SmtpRejected`.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from batchcast.core.settings import Settings
from batchcast.ports import TransientError


class SmtpRejected(RuntimeError):
    """The server refused the email for good (5xx): retrying the same thing will not help."""


class SmtpMailer:
    """Sends each email through one SMTP session: EHLO, STARTTLS, login, send."""

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        starttls: bool = True,
        username: str = "",
        password: str = "",
        sender: str = "batchcast@localhost",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.starttls = host, port, starttls
        self.username, self._password, self.sender = username, password, sender
        self.timeout = timeout
        self.ssl_context = ssl_context  # None: the system's trusted CAs (honours SSL_CERT_FILE)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        """The mailer ``BATCHCAST_SMTP_*`` describe."""
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            sender=settings.smtp_sender,
        )

    def send(self, email: EmailMessage) -> None:
        """Send ``email`` (``From`` defaults to the configured sender)."""
        if "From" not in email:
            email["From"] = self.sender
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as session:
                session.ehlo()
                if self.starttls:
                    session.starttls(context=self.ssl_context or ssl.create_default_context())
                    session.ehlo()
                if self.username:
                    session.login(self.username, self._password)
                refused = session.send_message(email)
        except smtplib.SMTPRecipientsRefused as error:
            _raise_for(error.recipients, error)
        except smtplib.SMTPResponseException as error:
            message = f"SMTP {error.smtp_code}: {error.smtp_error!r} from {self.host}:{self.port}"
            if 400 <= error.smtp_code < 500:
                raise TransientError(message) from error
            raise SmtpRejected(message) from error
        except (OSError, smtplib.SMTPException) as error:  # refused, reset, timeout, TLS, disconnect
            raise TransientError(f"SMTP {self.host}:{self.port} unreachable: {error}") from error
        # Some recipients refused, others accepted: the email is out, and sending it again would
        # give the accepted ones a second copy. smtplib raises only when every recipient refused.
        del refused


def _raise_for(refused: dict[str, tuple[int, bytes]], cause: BaseException) -> None:
    detail = ", ".join(f"{address}: {code} {reply!r}" for address, (code, reply) in refused.items())
    if all(400 <= code < 500 for code, _ in refused.values()):
        raise TransientError(f"recipients deferred: {detail}") from cause
    raise SmtpRejected(f"recipients refused: {detail}") from cause
