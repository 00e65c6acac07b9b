"""Worker settings that point Gmail and Outlook at local fakes, with OAuth clients configured."""

from __future__ import annotations

from typing import Any

NOWHERE = "http://127.0.0.1:9"


def mailbox_settings(gmail_url: str = NOWHERE, graph_url: str = NOWHERE) -> dict[str, Any]:
    return {
        "google_api_url": gmail_url,
        "google_client_id": "client-g",
        "google_client_secret": "secret-g",
        "microsoft_graph_url": graph_url,
        "microsoft_client_id": "client-m",
        "microsoft_client_secret": "secret-m",
    }
