"""Ways out for a rendered message: Mailgun, SMTP, the outbox folder, and the user's own Gmail or Outlook."""

from mailroom.transports.base import (
    OutgoingMessage,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
    Transport,
)
from mailroom.transports.mailgun import MailgunTransport, TemplateRecipient, TemplateSend
from mailroom.transports.outbox import OutboxTransport
from mailroom.transports.smtp import SmtpTransport

__all__ = [
    "MailgunTransport",
    "OutboxTransport",
    "OutgoingMessage",
    "PermanentSendError",
    "SendError",
    "SendResult",
    "SmtpTransport",
    "TemplateRecipient",
    "TemplateSend",
    "TransientSendError",
    "Transport",
]
