"""The workspace's browser tests share one headless Chromium fixture (tests/support/chrome.py)."""

from tests.support.chrome import chrome

__all__ = ["chrome"]
