"""The daemon's configuration: TOML files decoded into frozen msgspec Structs.

Every section owns its Struct (defaults = the embedded default config). Decoding refuses unknown
keys, wrong types and out-of-range values with a `ConfigError` naming the dotted key, the value and
what is allowed. Strategy and venue parameters are decoded by the plugin the config names
(`daemon/plugins.py`), so `daemon/` knows no strategy or broker by module. Secrets never come from a
file: a key that looks like one (secret, password, passphrase, token, api_key, key_id, access_key,
credentials, auth, ...) is refused at any depth without showing its value, and adapters read them
from the environment.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from himari.daemon.configbase import ConfigError, check_choice, check_range
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.matrices.strategic import StrategicConfig
from himari.daemon.matrices.tactical import TacticalConfig
from himari.daemon.risk.config import RiskConfig

# A key whose name suggests a credential is refused wherever it appears (values never shown);
# a key ending in `_env` names an environment variable (venue.params.secret_env) and is allowed.
_SECRET_KEY = re.compile(r"(secret|passw|passphrase|pwd|api_?key|private_?key|key_?id|access_?key|"
                         r"token|credential|auth|session_?key|signature|cookie|bearer)", re.I)


def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(name)) and not name.lower().endswith("_env")


class InstrumentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The traded instrument. "auto" sizes are inferred from the data file (file replays only)."""

    id: str = ""  # "" = "SYN" for the synthetic stream, else the first data file's name
    tick_size: str = "auto"
    lot_size: str = "auto"
    multiplier: Decimal = Decimal(1)
    currency: str = "auto"  # "auto" = the quote currency of an FX pair id (usdjpy -> JPY), else USD

    def __post_init__(self) -> None:
        if self.currency != "auto" and not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ConfigError("instrument.currency", self.currency, '"auto" or a 3-letter code')
        for key in ("tick_size", "lot_size"):
            value = getattr(self, key)
            if value != "auto":
                try:
                    ok = Decimal(value).is_finite() and Decimal(value) > 0
                except Exception:
                    ok = False
                if not ok:
                    raise ConfigError(f"instrument.{key}", value, '"auto" or a positive decimal string')
        if not self.multiplier.is_finite() or self.multiplier <= 0:
            raise ConfigError("instrument.multiplier", str(self.multiplier), "a positive decimal")
        if self.id and not re.fullmatch(r"[A-Za-z0-9._\-/]{1,64}", self.id):
            raise ConfigError("instrument.id", self.id, "1-64 characters of A-Z a-z 0-9 . _ - /")


class MatricesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Feature matrices on 5-minute bars (tactical) and 30-minute bars built from them (strategic)."""

    enabled: bool = True
    tactical: TacticalConfig = msgspec.field(default_factory=TacticalConfig)
    strategic: StrategicConfig = msgspec.field(default_factory=StrategicConfig)
    synergy: dict[str, Any] = {}  # decoded by strategies/synergy.py's SynergyConfig


class StrategySection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = "ensemble"  # see daemon/plugins.py
    params: dict[str, Any] = {}  # decoded by the strategy's own config Struct


class VenueSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = "sim"
    params: dict[str, Any] = {}  # decoded by the venue's own config Struct


class ReplayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    speed: float = 0.0  # 0 = as fast as possible; 10 = ten times recorded speed
    progress: bool = True  # progress lines on stderr for long replays
    history_s: float = 0.0  # the first N data seconds only warm the matrices; trading starts after

    def __post_init__(self) -> None:
        check_range("replay.speed", self.speed, 0.0, 1e9)
        check_range("replay.history_s", self.history_s, 0.0, 10 * 366 * 86400.0)


class LiveConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The live runner (paper and live modes). With recorded or synthetic data (paper-sim) the
    data is paced at `speed` times its recorded pace and stamped with the wall clock."""

    speed: float = 1.0  # recorded/synthetic data only: 60 = an hour of data per wall minute
    history_s: float = 0.0  # data seconds handed over at once to warm the matrices
    duration_s: float = 0.0  # stop gracefully after this long (0 = until SIGTERM or data end)
    bar_close_delay_ms: float = 100.0  # a time bar closes this long after its end without a tick
    # policy when the venue's stream drops: cancel every working order (true), or keep them
    # working and reconcile once it is back (false)
    cancel_on_disconnect: bool = False

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ConfigError("live.speed", self.speed, "a number > 0")
        check_range("live.speed", self.speed, 1e-6, 1e9)
        check_range("live.history_s", self.history_s, 0.0, 366 * 86400.0)
        check_range("live.duration_s", self.duration_s, 0.0, 10 * 366 * 86400.0)
        check_range("live.bar_close_delay_ms", self.bar_close_delay_ms, 0.0, 60_000.0)


class ReportConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    out_dir: str = "out"
    decision_log: bool = True  # decisions.jsonl through the slow path
    journal: bool = True  # journal.jsonl: the order manager's write-ahead journal
    journal_fsync: bool = False  # fsync each record (live: true; a replay can rebuild it)


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: str = "info"
    format: str = "json"  # json (production) | console

    def __post_init__(self) -> None:
        check_choice("log.level", self.level, ("debug", "info", "warning", "error"))
        check_choice("log.format", self.format, ("json", "console"))


class AccountConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The account: one currency. An instrument quoted in another currency needs a stated rate in
    `fx_rates` (account currency per unit of that currency), else the session refuses to start."""

    starting_cash: Decimal = Decimal("100000")
    currency: str = "USD"
    fx_rates: dict[str, Decimal] = {}

    def __post_init__(self) -> None:
        if not self.starting_cash.is_finite() or self.starting_cash <= 0:
            raise ConfigError("account.starting_cash", str(self.starting_cash), "a positive decimal")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ConfigError("account.currency", self.currency, "a 3-letter currency code, e.g. USD")
        for code, rate in self.fx_rates.items():
            if not re.fullmatch(r"[A-Z]{3}", code):
                raise ConfigError(f"account.fx_rates.{code}", str(rate), "a 3-letter currency code key")
            if not rate.is_finite() or rate <= 0:
                raise ConfigError(f"account.fx_rates.{code}", str(rate), "a positive decimal rate")


class DaemonConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: str = "replay"  # replay | paper | live
    state_dir: str = ""  # journal, lock and id sessions; "" = none (`run --state-dir` overrides)

    def __post_init__(self) -> None:
        check_choice("daemon.mode", self.mode, ("replay", "paper", "live"))


class HimariConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    instrument: InstrumentConfig = msgspec.field(default_factory=InstrumentConfig)
    account: AccountConfig = msgspec.field(default_factory=AccountConfig)
    feed: FeedConfig = msgspec.field(default_factory=FeedConfig)
    matrices: MatricesConfig = msgspec.field(default_factory=MatricesConfig)
    strategy: StrategySection = msgspec.field(default_factory=StrategySection)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    venue: VenueSection = msgspec.field(default_factory=VenueSection)
    replay: ReplayConfig = msgspec.field(default_factory=ReplayConfig)
    live: LiveConfig = msgspec.field(default_factory=LiveConfig)
    report: ReportConfig = msgspec.field(default_factory=ReportConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)


# --------------------------------------------------------------------------------------------
# Decoding with errors that name the key


def _lookup(raw: Any, path: list[str]) -> Any:
    node = raw
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _struct_at(cls: Any, path: list[str]) -> Any:
    for part in path:
        fields = {f.name: f.type for f in msgspec.structs.fields(cls)} if _is_struct(cls) else {}
        cls = fields.get(part)
        if cls is None:
            return None
    return cls


def _is_struct(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, msgspec.Struct)


def _merge(where: list[str], key: list[str]) -> list[str]:
    """Join the location msgspec reports with a section's own dotted key, dropping the overlap
    (["matrices", "tactical"] + ["tactical", "momentum_n"] -> matrices.tactical.momentum_n)."""
    for n in range(min(len(where), len(key)), 0, -1):
        if where[-n:] == key[:n]:
            return where + key[n:]
    return where + key


def _path(at: str) -> list[str]:
    # msgspec paths look like "$.risk.max_order_quantity" or "$.feed.paths[0]"
    return [p for p in re.split(r"[.\[\]]+", at.removeprefix("$")) if p]


def decode_section(raw: dict[str, Any], cls: type, prefix: str = "") -> Any:
    """Convert a raw TOML table into `cls`, turning msgspec errors into ConfigErrors."""
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        text, _, at = msg.rpartition(" - at `")
        if not text:
            text, at = msg, "$"
        at = at.rstrip("`")
        path = _path(at)
        where = (prefix.split(".") if prefix else []) + path
        if text.startswith("config key "):  # raised by a section's own range check
            m = re.match(r"config key '([^']+)' = (.*?) is not allowed: (.*)", text, re.S)
            if m:
                key = ".".join(_merge(where, m.group(1).split(".")))
                raise ConfigError(key, m.group(2), m.group(3), value_text=m.group(2)) from None
        unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
        if unknown:
            owner = _struct_at(cls, path)
            allowed = (", ".join(f.name for f in msgspec.structs.fields(owner))
                       if _is_struct(owner) else "no such key")
            key = ".".join(where + [unknown.group(1)])
            raise ConfigError(key, _lookup(raw, path + [unknown.group(1)]),
                              f"unknown key; allowed keys here: {allowed}") from None
        key = ".".join(where) or "(top level)"
        raise ConfigError(key, _lookup(raw, path), text) from None


def _refuse_secrets(raw: Any, path: list[str]) -> None:
    """Refuse a credential-like key at any depth, in tables and in arrays of tables."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            if is_secret_key(str(k)):
                raise ConfigError(".".join(path + [str(k)]), "<hidden>",
                                  "secrets are read only from the environment, never from a file",
                                  value_text="<hidden>")
            _refuse_secrets(v, path + [str(k)])
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            _refuse_secrets(v, path + [str(i)])


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set section.key=value` (the value in TOML syntax; bare words are strings)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        shown = "<hidden>" if any(is_secret_key(p) for p in re.split(r"[^A-Za-z0-9_]+", key)) \
            else None
        raise ConfigError("--set", assignment, "KEY=VALUE with a dotted key, e.g. risk.max_position=3",
                          value_text=shown)
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, assignment, f"'{part}' is a value, not a table")
        node = child
    node[parts[-1]] = value


def parse_config(text: str, source: str = "<string>",
                 overrides: list[str] | None = None) -> HimariConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(file)", source, f"valid TOML ({exc})") from None
    for assignment in overrides or []:
        apply_override(raw, assignment)
    _refuse_secrets(raw, [])
    cfg: HimariConfig = decode_section(raw, HimariConfig)
    # Plugin parameters are decoded now, so a bad strategy or venue setting refuses to start.
    from himari.daemon import plugins

    plugins.strategy_config(cfg)
    plugins.venue_config(cfg)
    plugins.synergy_config(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> HimariConfig:
    if path is None:
        return parse_config("", "<defaults>", overrides) if overrides else HimariConfig()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError("--config", str(p), f"a readable TOML file ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")  # TOML is UTF-8; never the locale's guess
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", str(p), f"a UTF-8 TOML file (byte {exc.start} is "
                          f"0x{data[exc.start]:02x}, not UTF-8)") from None
    return parse_config(text, str(p), overrides)


def default_config() -> HimariConfig:
    return HimariConfig()
