"""Faults on command (`POST /admin/faults`): what a real broker connection does on a bad day.

Keys of the JSON body (each optional; the body replaces the settings it names):
- `drop_ws`: true closes every WebSocket now (trade updates and market data); clients reconnect.
- `http_429`: {"count": N, "retry_after": S}: the next N REST calls get 429 with `Retry-After: S`.
- `http_5xx`: {"count": N, "status": 500|502|503|504}: the next N REST calls fail with it.
- `duplicate`: N: the next N trade updates are each sent twice.
- `reorder`: N: the next N trade updates are each held back and sent after the one that follows.
- `delay_ms`: D: every trade update is sent D ms late (0: off).
- `never_confirm`: true: accepted orders get no `new` trade update (the REST answer still comes).
- `partial_fills`: N: every execution is split into N fills of about equal size (0 or 1: off).
`DELETE /admin/faults` clears them all; `GET` shows them.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FaultError(ValueError):
    pass


class Faults(msgspec.Struct, kw_only=True):
    http_429: int = 0
    retry_after_s: int = 1
    http_5xx: int = 0
    http_5xx_status: int = 503
    duplicate: int = 0
    reorder: int = 0
    delay_ms: int = 0
    never_confirm: bool = False
    partial_fills: int = 0

    def apply(self, body: Any) -> bool:
        """Update from a request body; returns whether `drop_ws` was asked for."""
        if not isinstance(body, dict):
            raise FaultError("the body must be a JSON object")
        known = {"drop_ws", "http_429", "http_5xx", "duplicate", "reorder", "delay_ms",
                 "never_confirm", "partial_fills"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise FaultError(f"unknown fault {unknown[0]!r} (known: {', '.join(sorted(known))})")
        if "http_429" in body:
            spec = _obj(body, "http_429")
            self.http_429 = _int("http_429.count", spec.get("count", 1), 0, 1_000_000)
            self.retry_after_s = _int("http_429.retry_after", spec.get("retry_after", 1), 0, 3600)
        if "http_5xx" in body:
            spec = _obj(body, "http_5xx")
            self.http_5xx = _int("http_5xx.count", spec.get("count", 1), 0, 1_000_000)
            self.http_5xx_status = _int("http_5xx.status", spec.get("status", 503), 500, 599)
        for key, hi in (("duplicate", 1_000_000), ("reorder", 1_000_000), ("delay_ms", 600_000),
                        ("partial_fills", 1000)):
            if key in body:
                setattr(self, key, _int(key, body[key], 0, hi))
        if "never_confirm" in body:
            if not isinstance(body["never_confirm"], bool):
                raise FaultError(f"never_confirm {body['never_confirm']!r} must be true or false")
            self.never_confirm = body["never_confirm"]
        drop = body.get("drop_ws", False)
        if not isinstance(drop, bool):
            raise FaultError(f"drop_ws {drop!r} must be true or false")
        return drop

    def view(self) -> dict[str, Any]:
        """The settings in the shape the POST body takes."""
        return {"http_429": {"count": self.http_429, "retry_after": self.retry_after_s},
                "http_5xx": {"count": self.http_5xx, "status": self.http_5xx_status},
                "duplicate": self.duplicate, "reorder": self.reorder, "delay_ms": self.delay_ms,
                "never_confirm": self.never_confirm, "partial_fills": self.partial_fills}

    def take_http(self) -> tuple[int, dict[str, str]] | None:
        """The failure the next REST call gets, if any (consumes one)."""
        if self.http_429 > 0:
            self.http_429 -= 1
            return 429, {"Retry-After": str(self.retry_after_s)}
        if self.http_5xx > 0:
            self.http_5xx -= 1
            return self.http_5xx_status, {}
        return None


def _obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    spec = body[key]
    if spec is True:
        return {}
    if not isinstance(spec, dict):
        raise FaultError(f"{key} {spec!r} must be an object like {{\"count\": 1}}")
    return spec


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FaultError(f"{key} {value!r} must be an integer in [{lo}, {hi}]")
    return value
