"""The `himari` command line.

Exit status: 0 on success; 2 for anything a restart cannot fix: bad usage or config (the message
names the key, the value and what is allowed), an unusable state or out directory, a state
directory another daemon holds, a damaged journal; 1 for a runtime failure a restart may fix
(under systemd's Restart=on-failure, a 1 for a problem that persists would be a restart loop).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from himari import __version__
from himari.daemon import plugins
from himari.daemon.configbase import ConfigError
from himari.daemon.statedir import StartupError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
# the commands that run the daemon's kernels (train / evaluate load numba the default way)
_DAEMON_COMMANDS = frozenset({"replay", "run", "paper", "check-config", "data", "sandbox"})


def _parser(sandbox: bool = False, train: bool = False,
            evaluate: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="himari", description="himari: an asyncio trading daemon")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="replay recorded data (or the built-in synthetic stream)")
    r.add_argument("data", nargs="*", help="CSV or Parquet files, ID=path to name an instrument "
                   "(several instruments are merged in time order); none = the synthetic stream")
    r.add_argument("--config", help="TOML config file (default: the embedded defaults)")
    r.add_argument("--out", default=None, help="output directory (default: report.out_dir, 'out')")
    r.add_argument("--speed", type=float, default=None,
                   help="0 = as fast as possible; N = N times the recorded speed")
    r.add_argument("--quiet", action="store_true", help="no summary on stdout")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set risk.max_position=3")

    d = sub.add_parser("run", help="run the daemon on a config file")
    d.add_argument("--config", required=True, help="TOML config file")
    d.add_argument("--out", default=None, help="output directory for replay mode")
    d.add_argument("--state-dir", default=None,
                   help="state directory: lock, journal, id sessions (default: daemon.state_dir)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key")

    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file")

    j = sub.add_parser("journal", help="print the state rebuilt from a state directory's journal")
    j.add_argument("state_dir", metavar="STATE_DIR")

    pp = sub.add_parser("paper", help="a bounded paper session against the broker sandbox "
                        "(started on loopback unless a broker URL is given) or a broker")
    pp.add_argument("--config", help="TOML config file (default: the embedded defaults)")
    pp.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    pp.add_argument("--broker-url", default=None, help="the broker's REST URL (default: start "
                    "the local sandbox)")
    pp.add_argument("--state-dir", default=None, help="lock, journal and id session")
    pp.add_argument("--out", default=None, help="output directory (default: report.out_dir)")
    pp.add_argument("--quiet", action="store_true", help="no summary on stdout")
    pp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config key")

    dc = sub.add_parser("data", help="the data catalog: CSV files parsed once, kept as Parquet")
    dsub = dc.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("import", help="parse CSV files into the catalog (as a replay would)")
    di.add_argument("files", nargs="+", metavar="FILE", help="CSV files (ID=path names the instrument)")
    dl = dsub.add_parser("ls", help="list the catalog's entries")
    for x in (di, dl):
        x.add_argument("--config", help="TOML config file: its [feed] mapping and catalog_dir")
        x.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key")

    if sandbox:  # its options live with the sandbox (importing it costs aiohttp: only when asked)
        plugins.sandbox_cli().add_parser(sub)
    else:
        sub.add_parser("sandbox", help="serve the local broker sandbox on Alpaca's protocol "
                       "(127.0.0.1; keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY)")

    if train:  # the training stack (gymnasium, d3rlpy, torch) is imported only for `himari train`
        importlib.import_module("himari.training.run").add_parser(sub)
    else:
        sub.add_parser("train", help="train the decision agents (see himari train --help)")
    if evaluate:  # plotly and the walk-forward only for `himari evaluate`
        importlib.import_module("himari.training.evaluate").add_parser(sub)
    else:
        sub.add_parser("evaluate", help="walk-forward on held-out data (see himari evaluate "
                       "--help)")

    sub.add_parser("version", help="print the version")
    return p


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    first = words[0] if words else ""
    if first in _DAEMON_COMMANDS:  # start-up: numba loads without scipy (see daemon/startup.py)
        from himari.daemon import startup

        startup.install()
    parser = _parser(sandbox=first == "sandbox", train=first == "train",
                     evaluate=first == "evaluate")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        if args.command == "version":
            print(f"himari {__version__}")
            return EXIT_OK
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "replay":
            return _replay(args)
        if args.command == "run":
            return _run(args)
        if args.command == "paper":
            return _paper(args)
        if args.command == "sandbox":
            from himari.daemon.logs import configure_logging

            configure_logging("info", "json")  # one JSON line per event (`himari paper` reads them)
            return int(plugins.sandbox_cli().main(args))
        if args.command == "journal":
            return _journal(args.state_dir)
        if args.command == "data":
            return _data(args)
        if args.command == "train":
            return int(importlib.import_module("himari.training.run").main(args))
        if args.command == "evaluate":
            return int(importlib.import_module("himari.training.evaluate").main(args))
    except (ConfigError, StartupError) as exc:
        print(f"himari: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say what broke, exit 1
        from himari.daemon.feeds.base import FeedError

        if isinstance(exc, FeedError):  # unreadable input or a bad column mapping
            print(f"himari: {exc}", file=sys.stderr)
            return EXIT_USAGE
        import structlog

        structlog.get_logger("himari.cli").exception("runtime_failure", error=str(exc))
        print(f"himari: runtime failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _check_config(path: str) -> int:
    from himari.daemon.config import load_config
    from himari.daemon.preflight import preflight

    cfg = load_config(path)
    preflight(cfg)  # the validation `run` does, plus reading the data: exactly what run accepts
    print(f"{path}: ok (mode {cfg.daemon.mode}, strategy {cfg.strategy.name}, "
          f"venue {cfg.venue.name})")
    return EXIT_OK


def _setup(cfg_path: str | None, overrides: list[str]):  # type: ignore[no-untyped-def]
    from himari.daemon.config import load_config
    from himari.daemon.logs import configure_logging

    cfg = load_config(cfg_path, overrides)
    configure_logging(cfg.log.level, cfg.log.format)
    return cfg


def _replay(args: argparse.Namespace) -> int:
    import msgspec

    from himari.daemon.config import ReplayConfig

    cfg = _setup(args.config, args.set)
    if args.speed is not None:
        if args.speed < 0:
            raise ConfigError("--speed", args.speed, "a number >= 0")
        cfg = msgspec.structs.replace(cfg, replay=ReplayConfig(speed=args.speed,
                                                               progress=cfg.replay.progress))
    out = Path(args.out or cfg.report.out_dir)
    return _run_replay(cfg, list(args.data), out, quiet=args.quiet)


def _run_replay(cfg, data: list[str], out: Path, quiet: bool = False,  # type: ignore[no-untyped-def]
                state_dir: Path | None = None) -> int:
    from himari.daemon.runtime import run_main
    from himari.daemon.report.build import print_summary

    report = run_main(cfg, data, out, state_dir)
    if report is None:
        return EXIT_RUNTIME
    if not quiet:
        print_summary(report)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from himari.daemon.preflight import preflight

    cfg = _setup(args.config, args.set)
    preflight(cfg, open_data=False)  # check-config's checks; the session reads the data itself
    out = Path(args.out or cfg.report.out_dir)
    state_dir = args.state_dir or cfg.daemon.state_dir
    return _run_replay(cfg, list(cfg.feed.paths), out, quiet=True,
                       state_dir=Path(state_dir) if state_dir else None)


def _paper(args: argparse.Namespace) -> int:
    import json

    from himari.daemon.paper import run_paper
    from himari.daemon.report.build import print_summary

    report, recon = run_paper(args.config, args.set, duration=args.duration,
                              broker_url=args.broker_url,
                              state_dir=Path(args.state_dir) if args.state_dir else None,
                              out=Path(args.out) if args.out else None)
    if report is None:
        return EXIT_RUNTIME
    if not args.quiet:
        print_summary(report)
        print("reconciliation with the broker: " + json.dumps(recon, sort_keys=True))
    return EXIT_OK if recon is None or recon["positions_equal"] else EXIT_RUNTIME


def _data(args: argparse.Namespace) -> int:
    from himari.daemon import catalog
    from himari.daemon.config import load_config

    cfg = load_config(args.config, args.set)
    if args.data_command == "import":
        for line in catalog.import_files(cfg, list(args.files)):
            print(line)
        return EXIT_OK
    rows = catalog.entries(cfg.feed)
    print(f"catalog {catalog.catalog_dir(cfg.feed)}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}")
    for r in rows:
        print(f"{r['state']:8} {r['ticks']:>12,} ticks  {r['kind']:6} tick {r['tick_size']:<10} "
              f"{r['parquet_bytes'] / 1e6:8.1f} MB  {r['created']}  {r['source']}")
    return EXIT_OK


def _journal(state_dir: str) -> int:
    """The state rebuilt from STATE_DIR's journal, as JSON on stdout (read only: no lock)."""
    import orjson

    from himari.daemon.orders.journal import JournalError
    from himari.daemon.orders.recovery import JOURNAL_NAME, load_state

    path = Path(state_dir) / JOURNAL_NAME
    if not path.is_file():
        raise StartupError(f"state directory {state_dir} has no journal ({path} is not a file)")
    try:
        state = load_state(state_dir)
    except (JournalError, OSError) as exc:
        raise StartupError(str(exc)) from None
    summary = {"state_dir": str(state_dir), "journal": str(path), **state.summary()}
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
