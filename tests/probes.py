"""HTTP probes of a running service's health endpoints (status and body, 503 included)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 carries the failing checks
        return int(exc.code), json.loads(exc.read())


async def health(base: str, endpoint: str = "readyz") -> tuple[int, dict[str, Any]]:
    """`GET {base}/{endpoint}` off the event loop: (status, body)."""
    return await asyncio.to_thread(get_json, f"{base}/{endpoint}")


def failing(answer: tuple[int, dict[str, Any]]) -> list[str]:
    """The failing checks of a health answer, as `name: reason` lines."""
    return list(answer[1].get("failing", []))
