"""Shared test helpers: real peers on loopback (SMTP, Mailgun) and ways to arrange data."""
