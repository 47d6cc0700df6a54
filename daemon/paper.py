"""`himari paper`: a bounded paper session across a real network boundary.

Without a broker URL (argument or `venue.params.base_url`) it starts the local broker sandbox
(`himari sandbox --port 0`) as its own process, on loopback, with keys generated for this session
unless `APCA_API_KEY_ID` / `APCA_API_SECRET_KEY` are set, and waits until it listens. The daemon
then trades through the Alpaca adapter (`venue.name = "alpaca"`, market data from the broker's
stream) for `--duration` seconds (or until SIGTERM), stops gracefully, and compares its positions
with the broker's, read back over REST: the reconciliation result is printed with the summary and
written to the report. The sandbox is stopped at the end; its state file stays in the out dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from himari.daemon.configbase import ConfigError

log = structlog.get_logger("himari.paper")

KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
READY_TIMEOUT_S = 60.0
# Without --config: the sandbox's market at 20x and 20-tick bars, so a minute trades.
# The one-minute demo trades the EMA cross on 20-tick bars: the ensemble decides on 5-minute bars
# once a day's worth of 30-minute matrices is ready, which a 60-second session never reaches.
DEMO_OVERRIDES = ["live.speed=20", 'strategy.name="ema_cross"', 'strategy.params.bar_spec="20t"']


@dataclass
class SandboxProcess:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def session_keys(env: dict[str, str]) -> dict[str, str]:
    """The broker keys for this session: from the environment, or generated for the sandbox."""
    if env.get(KEY_ENV) and env.get(SECRET_ENV):
        return {KEY_ENV: env[KEY_ENV], SECRET_ENV: env[SECRET_ENV]}
    return {KEY_ENV: "PK" + secrets.token_hex(8).upper(), SECRET_ENV: secrets.token_urlsafe(30)}


def start_sandbox(out_dir: Path, env: dict[str, str], symbols: list[str],
                  speed: float) -> SandboxProcess:
    """`himari sandbox --port 0` in its own process; returns once it listens (its port is read
    from its start-up log line)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "himari.daemon.cli", "sandbox", "--port", "0",
           "--state", str(out_dir / "sandbox-state.json"), "--symbols", ",".join(symbols),
           "--speed", str(speed)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=str(out_dir))
    sp = SandboxProcess(proc, "")
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        sp.lines.append(line)
        if "sandbox_started" in line:
            port = _port(line)
            if port:
                sp.url = f"http://127.0.0.1:{port}"
                _drain_in_background(sp)
                return sp
    sp.stop()
    raise RuntimeError("the broker sandbox did not start: " + "".join(sp.lines[-5:]).strip())


def _port(line: str) -> int:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return int(json.loads(line).get("port", 0))
    for part in line.replace(",", " ").split():
        if part.startswith("port="):
            return int(part.split("=", 1)[1])
    return 0


def _drain_in_background(sp: SandboxProcess) -> None:
    """Keep reading the sandbox's output so its pipe never fills (a daemon thread, bounded by
    the process: it ends when the sandbox closes its output)."""
    import threading

    def pump() -> None:
        assert sp.proc.stdout is not None
        for line in sp.proc.stdout:
            if len(sp.lines) < 10_000:
                sp.lines.append(line)

    threading.Thread(target=pump, daemon=True, name="sandbox-output").start()


async def broker_positions(url: str, keys: dict[str, str], attempts: int = 8,
                           max_wait_s: float = 5.0) -> dict[str, Decimal]:
    """The broker's positions over REST (GET /v2/positions), signed quantities by symbol. A 429
    waits for its Retry-After and a 5xx backs off, as the adapter does (`attempts` in all)."""
    import aiohttp

    headers = {"APCA-API-KEY-ID": keys[KEY_ENV], "APCA-API-SECRET-KEY": keys[SECRET_ENV]}
    async with aiohttp.ClientSession(headers=headers) as http:
        for attempt in range(1, attempts + 1):
            async with http.get(f"{url}/v2/positions",
                                timeout=aiohttp.ClientTimeout(total=10)) as r:
                if (r.status == 429 or r.status >= 500) and attempt < attempts:
                    wait = min(max_wait_s, 0.25 * 2 ** (attempt - 1))
                    with contextlib.suppress(ValueError):
                        wait = min(max_wait_s, float(r.headers.get("Retry-After", wait)))
                    log.warning("paper_positions_retry", status=r.status, attempt=attempt,
                                wait_s=wait)
                    await asyncio.sleep(wait)
                    continue
                r.raise_for_status()
                body = await r.json()
                return {p["symbol"]: Decimal(p["qty"]) for p in body}
    raise AssertionError("unreachable: the last attempt returns or raises")


def reconciliation(report: dict[str, Any], broker: dict[str, Decimal]) -> dict[str, Any]:
    ours = {i: Decimal(v["position_lots"]) * Decimal(v["lot_size"])
            for i, v in report["instruments"].items()}
    symbols = sorted(set(ours) | set(broker))
    rows = {s: {"daemon": str(ours.get(s, Decimal(0))), "broker": str(broker.get(s, Decimal(0)))}
            for s in symbols}
    equal = all(ours.get(s, Decimal(0)) == broker.get(s, Decimal(0)) for s in symbols)
    return {"positions_equal": equal, "positions": rows}


def paper_overrides(url: str, symbols: list[str], duration: float | None,
                    probe: Any) -> list[str]:
    ws = "ws" + url[len("http"):]
    out = ['daemon.mode="paper"', 'feed.kind="broker"', 'venue.name="alpaca"',
           f'venue.params.base_url="{url}"', f'venue.params.data_url="{ws}/v2/test"',
           'venue.params.feed="test"', f"feed.symbols={json.dumps(symbols)}"]
    if duration is not None:
        if not duration > 0:
            raise ConfigError("--duration", duration, "a number of seconds > 0")
        out.append(f"live.duration_s={duration}")
    # US equities trade in cents and whole shares unless the config says otherwise
    if probe.instrument.tick_size == "auto":
        out.append('instrument.tick_size="0.01"')
    if probe.instrument.lot_size == "auto":
        out.append('instrument.lot_size="1"')
    return out


def check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError("--broker-url", url, "an http:// or https:// URL")
    return url.rstrip("/")


def run_paper(cfg_path: str | None, overrides: list[str], *, duration: float | None,
              broker_url: str | None, state_dir: Path | None, out: Path | None
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Run the session; returns (report, reconciliation) (report None: stopped without one)."""
    from himari.daemon.config import load_config
    from himari.daemon.logs import configure_logging
    from himari.daemon.runtime import run_main

    if cfg_path is None:  # the embedded demo: a market fast enough to trade within a minute
        overrides = [*DEMO_OVERRIDES, *overrides]
    probe = load_config(cfg_path, overrides)
    symbols = list(probe.feed.symbols) or ["AAPL", "MSFT"]
    out_dir = Path(out or probe.report.out_dir)
    env = dict(os.environ)
    keys = session_keys(env)
    sandbox: SandboxProcess | None = None
    url = check_url(broker_url) if broker_url else str(probe.venue.params.get("base_url", ""))
    if not url:
        # the sandbox's market runs at live.speed (market seconds per wall second)
        sandbox = start_sandbox(out_dir, {**env, **keys}, symbols, speed=probe.live.speed)
        url = sandbox.url
        log.info("paper_sandbox_started", url=url, symbols=symbols)
    try:
        os.environ.update(keys)  # the adapter reads the keys from the environment, never config
        cfg = load_config(cfg_path, [*overrides, *paper_overrides(url, symbols, duration, probe)])
        configure_logging(cfg.log.level, cfg.log.format)
        report = run_main(cfg, [], out_dir, state_dir)
        recon = None
        if report is not None:
            recon = asyncio.run(broker_positions(url, keys))
            recon = reconciliation(report, recon)
            report["reconciliation"] = recon
            from himari.daemon.report.build import write_json_report

            write_json_report(out_dir, report)
        return report, recon
    finally:
        if sandbox is not None:
            sandbox.stop()
