"""What the domains service needs of an ESP that sends for a user's domain only once it is set up there.

Such an ESP (``Capabilities.verifies_domains``: Mailgun) has an API that sets the domain up (or finds it),
answers the DNS records it wants published, and looks at the DNS again when asked. The records are
checked with our own lookups either way; failures raise ``DomainSetupError`` with a reason safe to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class DomainSetupError(Exception):
    """The provider refused, could not be reached, or is not configured; ``reason`` is safe to show a user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WantedRecord(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def record_type(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def priority(self) -> int | None: ...


class ProviderDomain(Protocol):
    """A domain as the provider set it up: the records it needs to send (``sending``) and to receive."""

    @property
    def sending(self) -> Sequence[WantedRecord]: ...
    @property
    def receiving(self) -> Sequence[WantedRecord]: ...


class ProviderDomains(Protocol):
    """The provider's domains API, opened for one request and closed after it."""

    async def ensure(self, name: str) -> ProviderDomain:
        """The domain, set up first when the provider does not know it."""
        ...

    async def verify(self, name: str) -> ProviderDomain:
        """Ask the provider to look at the domain's DNS records again."""
        ...

    async def aclose(self) -> None: ...
