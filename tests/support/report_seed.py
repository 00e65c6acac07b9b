"""A sent campaign's recipients and what happened to them, written by set-based SQL (generate_series):
the campaign report's browser test and bench/report.py seed with it, at 1,240 recipients or 100,000.

Recipient number g is a named contact; by g, 3% failed (with a few reasons) and the rest were delivered,
40% opened (some twice), 10% clicked one of five links, over five days after sending, most in the first
hours. The counters are set as the settler would have moved them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

FIRST_NAMES = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Elijah",
    "Sophia",
    "Lucas",
    "Mia",
    "Mateo",
    "Amelia",
    "Ethan",
    "Harper",
    "Aiden",
    "Isabella",
    "Leo",
]
LAST_NAMES = [
    "Garcia",
    "Smith",
    "Johnson",
    "Nguyen",
    "Patel",
    "Brown",
    "Kim",
    "Lopez",
    "Miller",
    "Davis",
    "Wilson",
    "Chen",
    "Rossi",
    "Novak",
]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "bayrealty-mail.net"]


def _pick(values: list[str], step: int) -> str:
    return f"(ARRAY[{', '.join(repr(v) for v in values)}])[1 + (g * {step}) %% {len(values)}]"


FIRST, LAST = _pick(FIRST_NAMES, 7), _pick(LAST_NAMES, 11)
# By g and g / 7: every tenth (the clickers) and every 33rd (the failures) spread over all the domains.
DOMAIN = f"(ARRAY[{', '.join(repr(d) for d in DOMAINS)}])[1 + (g + g / 7) %% {len(DOMAINS)}]"
ADDRESS = f"lower({FIRST}) || '.' || lower({LAST}) || g || '@' || {DOMAIN}"
CONTACTS = f"""
    INSERT INTO contacts (brand, emails, first_name, last_name)
    SELECT %(brand)s, ARRAY[{ADDRESS}], {FIRST}, {LAST} FROM generate_series(1, %(n)s) g
"""
# One email and one recipient row per contact; ids derived from the position so the two can be joined.
EMAILS = f"""
    INSERT INTO emails (id, "from", "to", subject, campaign, sent_at, created_at)
    SELECT md5(%(campaign)s::text || g)::uuid, 'ann@bayrealty.example', ARRAY[{ADDRESS}],
           'Spring listings are here', %(campaign)s, %(executed)s, %(executed)s
    FROM generate_series(1, %(n)s) g
"""
RECIPIENT_ROWS = f"""
    INSERT INTO email_campaign_emails (id, campaign, seq, email, email_address, send_type, contact, accepted)
    SELECT md5('row' || %(campaign)s::text || g)::uuid, %(campaign)s, g, md5(%(campaign)s::text || g)::uuid,
           c.emails[1], 'To', c.id, 1
    FROM generate_series(1, %(n)s) g JOIN contacts c ON c.brand = %(brand)s AND c.emails[1] = {ADDRESS}
"""
EVENTS = f"""
    INSERT INTO email_events (type, severity, source, brand, campaign, email, campaign_email, recipient, url,
                              reason, occurred_at)
    SELECT e.type, e.severity, 'mailgun', %(brand)s, %(campaign)s, md5(%(campaign)s::text || g)::uuid,
           md5('row' || %(campaign)s::text || g)::uuid, {ADDRESS}, e.url, e.reason, %(executed)s + e.after
    FROM generate_series(1, %(n)s) g, LATERAL (
        SELECT 'failed' AS type,
               CASE WHEN (g / 33) %% 3 = 1 THEN 'temporary' ELSE 'permanent' END AS severity,
               NULL AS url,
               (ARRAY['5.1.1 No such user', '4.2.2 Mailbox full', '5.7.1 Blocked as spam'])[1 + (g / 33) %% 3]
                   AS reason,
               interval '2 minutes' AS after
        WHERE g %% 33 = 0
        UNION ALL SELECT 'delivered', NULL, NULL, NULL, interval '1 minute' WHERE g %% 33 <> 0
        UNION ALL SELECT 'opened', NULL, NULL, NULL, make_interval(secs => 60 + (g::bigint * 7919 %% 1000) ^ 2 / 2.3)
        WHERE g %% 33 <> 0 AND g %% 5 < 2
        UNION ALL SELECT 'opened', NULL, NULL, NULL,
               make_interval(secs => 3600 + (g::bigint * 104729 %% 1000) ^ 2 / 2.5)
        WHERE g %% 33 <> 0 AND g %% 10 = 0
        UNION ALL SELECT 'clicked', NULL,
               (ARRAY['https://bayrealty.example/listings/12-elm-street', 'https://bayrealty.example/open-houses',
                      'https://bayrealty.example/listings/48-harbor-view', 'https://bayrealty.example/mortgage',
                      'https://bayrealty.example/contact'])[1 + (g / 10) %% 5], NULL,
               make_interval(secs => 120 + (g::bigint * 7919 %% 1000) ^ 2 / 2.3)
        WHERE g %% 33 <> 0 AND g %% 10 = 0
    ) e
"""
# The counters the settler would have moved: per message (raw), per recipient (0 or 1), per campaign.
COUNTERS = """
    WITH per AS (
        SELECT email, campaign_email, count(*) FILTER (WHERE type = 'delivered') AS delivered,
               count(*) FILTER (WHERE type = 'failed') AS failed, count(*) FILTER (WHERE type = 'opened') AS opened,
               count(*) FILTER (WHERE type = 'clicked') AS clicked
        FROM email_events WHERE campaign = %(campaign)s GROUP BY email, campaign_email
    ), emails AS (
        UPDATE emails m SET delivered = per.delivered, failed = per.failed, opened = per.opened,
               clicked = per.clicked, accepted = 1
        FROM per WHERE m.id = per.email
    )
    UPDATE email_campaign_emails ce SET delivered = least(per.delivered, 1), failed = least(per.failed, 1),
           opened = least(per.opened, 1), clicked = least(per.clicked, 1)
    FROM per WHERE ce.id = per.campaign_email
"""
CAMPAIGN_COUNTERS = """
    UPDATE email_campaigns c SET recipients_count = s.n, sent = s.n, accepted = s.n, delivered = s.delivered,
           failed = s.failed, opened = s.opened, clicked = s.clicked, failed_at = NULL
    FROM (SELECT count(*) AS n, sum(delivered) AS delivered, sum(failed) AS failed, sum(opened) AS opened,
                 sum(clicked) AS clicked FROM email_campaign_emails WHERE campaign = %(campaign)s) s
    WHERE c.id = %(campaign)s
"""


def seed_sent_campaign(
    conn: psycopg.Connection[Any], brand: uuid.UUID, campaign: uuid.UUID, executed: datetime, recipients: int
) -> None:
    """The campaign's ``recipients`` contacts, emails, recipient rows, events and counters."""
    params = {"campaign": campaign, "brand": brand, "executed": executed, "n": recipients}
    for statement in (CONTACTS, EMAILS, RECIPIENT_ROWS, EVENTS, COUNTERS, CAMPAIGN_COUNTERS):
        conn.execute(statement, params)
