"""The unsubscribe footer of mail a recipient gets from the ESP when its template gives no link of its own.

Marketing mail must let a person stop it from the message itself; List-Unsubscribe covers mail clients
that show it, the footer everyone else. A template that places ``{{ unsubscribe_url }}`` itself gets no
footer: the rendered message already holds that recipient's link. Mail through a user's own Gmail or
Outlook, and a shared message to several people, are one person writing to others and get none.
"""

from __future__ import annotations

import html
import re

from mailroom.templating.render import RenderedMessage

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
FOOTER_TEXT = "To stop receiving these emails, unsubscribe:"


def with_footer(message: RenderedMessage, url: str) -> RenderedMessage:
    """The message with an unsubscribe footer, unless it carries ``url`` already."""
    if url in (message.html or "") or url in message.text:
        return message
    text = f"{message.text.rstrip()}\n\n--\n{FOOTER_TEXT} {url}\n"
    if message.html is None:
        return RenderedMessage(message.subject, None, text)
    footer = (
        '<p style="margin-top:24px;font-size:12px;color:#666666">'
        f'{FOOTER_TEXT.removesuffix(":")}: <a href="{html.escape(url)}">unsubscribe</a>.</p>'
    )
    # Before the last </body> (a document's own end), else at the end.
    ends = list(_BODY_END.finditer(message.html))
    at = ends[-1].start() if ends else len(message.html)
    return RenderedMessage(message.subject, message.html[:at] + footer + message.html[at:], text)
