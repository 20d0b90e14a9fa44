"""Waiting on a Qt application from a script: pump events until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait(app: Any, condition: Callable[[], bool], seconds: float, poll: float = 0.002) -> None:
    """Process events until ``condition()``; SystemExit after ``seconds``."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {seconds} s")
        app.processEvents()
        time.sleep(poll)


def pause(app: Any, seconds: float) -> None:
    """Process events for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)
