"""The service secret every test process uses: a real 32-byte key, as the service demands."""

from __future__ import annotations

TEST_SECRET_KEY = "lqR3v2nJ8Yc0tKpWf6HsZu1bXaEo9gDmT4yCiV7rNhQ"
