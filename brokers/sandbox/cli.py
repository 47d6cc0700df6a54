"""`himari sandbox [--port N]`: the pieces the daemon's CLI wires in.

`add_parser(sub)` adds the subcommand to the CLI's subparsers; `main(args)` runs it and returns
the exit status (2 for a bad option or config, raised as ConfigError for the CLI to report).
API keys come from the environment (`APCA_API_KEY_ID`, `APCA_API_SECRET_KEY`), else are
generated and written, never logged, to a file only the user can read (its path is logged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.server import run_sandbox
from himari.daemon.configbase import ConfigError

DEFAULT_PORT = 8765
KEYS_FILE = "sandbox-keys.env"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    s = sub.add_parser("sandbox", help="serve a local broker sandbox on Alpaca's protocol")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 = any")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    s.add_argument("--state", default="sandbox/state.json",
                   help="account state file, kept across restarts (default sandbox/state.json)")
    s.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated (default AAPL,MSFT)")
    s.add_argument("--speed", type=float, default=1.0, help="market seconds per wall second")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--cash", default="100000", help="starting cash of a new account")
    s.add_argument("--replay", action="append", default=[], metavar="SYMBOL=PATH",
                   help="replay this CSV/Parquet file as SYMBOL's market (repeatable) instead "
                        "of the synthetic stream")
    return s


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", args.port, "a TCP port in [0, 65535]")
    return SandboxConfig(symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
                         speed=args.speed, seed=args.seed, starting_cash=args.cash,
                         state_path=args.state, replay_paths=list(args.replay))


def keys(env: dict[str, str], keys_dir: Path) -> tuple[str, str]:
    """The keys from the environment, or new ones written to keys_dir/sandbox-keys.env (0600)."""
    key_id, secret = env.get("APCA_API_KEY_ID", ""), env.get("APCA_API_SECRET_KEY", "")
    if key_id and secret:
        return key_id, secret
    if key_id or secret:
        raise ConfigError("APCA_API_KEY_ID / APCA_API_SECRET_KEY", "<one of them set>",
                          "both set, or neither (then keys are generated)")
    key_id, secret = "PK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / KEYS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"APCA_API_KEY_ID={key_id}\nAPCA_API_SECRET_KEY={secret}\n")
    os.chmod(path, 0o600)
    return key_id, secret


async def serve(cfg: SandboxConfig, host: str, port: int, key_id: str, secret: str) -> None:
    """run_sandbox until SIGINT / SIGTERM (then the state is saved and the sockets closed)."""
    task = asyncio.ensure_future(run_sandbox(cfg, host, port, key_id, secret))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    import structlog

    cfg = config_from_args(args)
    key_id, secret = keys(dict(os.environ), Path(cfg.state_path).parent)
    if not os.environ.get("APCA_API_SECRET_KEY"):
        structlog.get_logger("himari.sandbox").info(
            "sandbox_keys_generated", file=str(Path(cfg.state_path).parent / KEYS_FILE))
    asyncio.run(serve(cfg, args.host, args.port, key_id, secret))
    return 0
