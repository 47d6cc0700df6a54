"""The `[feed]` config section: where ticks come from and how a data file is read.

`kind = "synthetic"` replays the built-in seeded generator (`[feed.synthetic]`); `kind = "file"`
replays `paths`, each read with auto-detection unless overridden:

- `format`: trades (price, size, side), quotes (bid, ask) or bars (open, high, low, close, volume);
  "auto" decides from the column names (or, without a header, from the values).
- `header`: "auto" takes the first line as a header when none of its fields is a number.
- `columns.<role>`: a column name or a 0-based position for each role; unset roles are found by
  common names (timestamp/time/ts, price, quantity/qty/size/volume, buyer_maker/side, bid, ask, ...).
- `ts_unit`: epoch unit of numeric timestamps ("auto" decides by magnitude: < 1e11 s, < 1e14 ms,
  < 1e17 us, else ns) or "iso" for text; `ts_format` a strptime format (with `%f` allowed last) for
  odd layouts; `timezone` applies to timestamps without a zone offset.
- `bar_ts`: whether a bar file stamps a bar by its open or its close time; `bar_seconds` the bar
  period (0 = the median step between timestamps).
- `side_codes`: aggressor codes the built-in table does not know, e.g. `{ A = 1, V = -1, X = 0 }`
  (+1 the buyer aggressed, -1 the seller, 0 unknown); matched case-insensitively, before the
  built-in B/S/N, BUY/SELL/NONE, buyer-maker true/false. An unknown code replays as side 0.
- `out_of_order`: a row older than the latest accepted one is dropped ("drop", counted), the file is
  stably sorted by time ("sort"), or the feed refuses it ("fail"). Several files of one instrument
  are ordered by their first timestamp ("drop", "sort"); "fail" refuses files given out of order
  or overlapping in time.
- `catalog`: keep the parsed columns of each CSV as Parquet in `catalog_dir` ("" =
  $HIMARI_CATALOG_DIR, else ~/.cache/himari/catalog) so the next replay of the file skips the parse.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from himari.daemon.configbase import ConfigError, check_choice, check_range

ROLES = ("ts", "price", "size", "side", "bid", "ask", "bid_size", "ask_size",
         "open", "high", "low", "close", "volume")


class ColumnsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Column name (str) or 0-based position (int) per role; None = auto-detect."""

    ts: str | int | None = None
    price: str | int | None = None
    size: str | int | None = None
    side: str | int | None = None
    bid: str | int | None = None
    ask: str | int | None = None
    bid_size: str | int | None = None
    ask_size: str | int | None = None
    open: str | int | None = None
    high: str | int | None = None
    low: str | int | None = None
    close: str | int | None = None
    volume: str | int | None = None

    def __post_init__(self) -> None:
        for role in ROLES:
            value = getattr(self, role)
            if isinstance(value, bool) or (isinstance(value, int) and value < 0):
                raise ConfigError(f"feed.columns.{role}", value, "a column name or a position >= 0")
            if isinstance(value, str) and not value.strip():
                raise ConfigError(f"feed.columns.{role}", value, "a non-empty column name")

    def mapped(self) -> dict[str, str | int]:
        return {r: getattr(self, r) for r in ROLES if getattr(self, r) is not None}


class SyntheticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The seeded generator (see synthetic.py for the model). Rates are per day of 86,400 s."""

    seed: int = 7
    n_ticks: int = 1_000_000
    start_price: str = "100.00"
    tick_size: str = "0.01"
    lot_size: str = "1"
    start: str = "2024-01-02T00:00:00Z"
    ticks_per_day: float = 100_000.0  # mean arrival rate
    u_shape: float = 3.0  # arrival rate at the day's open/close over the midday rate
    daily_vol: float = 0.02  # long-run sigma of log price per day
    vol_mean_reversion: float = 5.0  # kappa of the log-vol OU process, per day
    vol_of_vol: float = 1.5  # xi of the log-vol OU process, per sqrt(day)
    leverage: float = -0.5  # correlation of price and vol shocks
    jumps_per_day: float = 1.0  # Poisson jump intensity
    jump_std: float = 0.005  # std of a log-price jump
    spread_bps: float = 1.5  # quoted spread at the long-run vol, basis points of price
    min_spread_ticks: int = 1
    size_median_lots: float = 3.0  # log-normal trade size: median ...
    size_sigma: float = 1.0  # ... and sigma of ln(size)
    side_persistence: float = 0.3  # chance the aggressor repeats the previous trade's side
    flow_impact: float = 0.4  # how much the aggressor side follows the price shock, [0, 1]

    def __post_init__(self) -> None:
        k = "feed.synthetic."
        check_range(k + "n_ticks", self.n_ticks, 1, 2_000_000_000)
        check_range(k + "seed", self.seed, 0, None)
        tick = _positive_decimal(k + "tick_size", self.tick_size)
        _positive_decimal(k + "lot_size", self.lot_size)
        price = _positive_decimal(k + "start_price", self.start_price)
        if price % tick != 0:
            raise ConfigError(k + "start_price", self.start_price, f"a multiple of tick_size {tick}")
        try:
            datetime.fromisoformat(self.start)
        except ValueError:
            raise ConfigError(k + "start", self.start, "an ISO 8601 time, e.g. 2024-01-02T00:00:00Z") from None
        check_range(k + "ticks_per_day", self.ticks_per_day, 0, 1e9, lo_open=True)
        check_range(k + "u_shape", self.u_shape, 1.0, 100.0)
        check_range(k + "daily_vol", self.daily_vol, 0.0, 1.0)
        check_range(k + "vol_mean_reversion", self.vol_mean_reversion, 0.0, 1e4, lo_open=True)
        check_range(k + "vol_of_vol", self.vol_of_vol, 0.0, 10.0)
        check_range(k + "leverage", self.leverage, -1.0, 1.0)
        check_range(k + "jumps_per_day", self.jumps_per_day, 0.0, 1e4)
        check_range(k + "jump_std", self.jump_std, 0.0, 0.5)
        check_range(k + "spread_bps", self.spread_bps, 0.0, 1e4)
        check_range(k + "min_spread_ticks", self.min_spread_ticks, 1, 1_000_000)
        check_range(k + "size_median_lots", self.size_median_lots, 1.0, 1e12)
        check_range(k + "size_sigma", self.size_sigma, 0.0, 5.0)
        check_range(k + "side_persistence", self.side_persistence, 0.0, 1.0, hi_open=True)
        check_range(k + "flow_impact", self.flow_impact, 0.0, 1.0)


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str = "synthetic"  # synthetic | file | broker (the venue plug-in's data client)
    paths: list[str] = []
    symbols: list[str] = []  # broker feeds: the instruments to trade ([] = instrument.id)
    format: str = "auto"  # auto | trades | quotes | bars
    header: str = "auto"  # auto | yes | no
    delimiter: str = "auto"  # auto (one of , ; tab |) or a single character
    columns: ColumnsConfig = msgspec.field(default_factory=ColumnsConfig)
    ts_unit: str = "auto"  # auto | s | ms | us | ns | iso
    ts_format: str = ""  # strptime format; "" = auto-detect
    timezone: str = "UTC"  # for timestamps without a zone offset
    side_semantics: str = "auto"  # auto (by column name) | aggressor | buyer_maker
    bar_ts: str = "open"  # open | close
    bar_seconds: int = 0  # 0 = infer from the median timestamp step
    side_codes: dict[str, int] = {}  # extra aggressor codes: code -> +1 buy, -1 sell, 0 unknown
    out_of_order: str = "drop"  # drop | sort | fail
    catalog: bool = True  # cache parsed CSV columns as Parquet (daemon/catalog.py)
    catalog_dir: str = ""  # "" = $HIMARI_CATALOG_DIR, else ~/.cache/himari/catalog
    batch_size: int = 65536
    currency: str = "USD"
    synthetic: SyntheticConfig = msgspec.field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        check_choice("feed.kind", self.kind, ("synthetic", "file", "broker"))
        check_choice("feed.format", self.format, ("auto", "trades", "quotes", "bars"))
        check_choice("feed.header", self.header, ("auto", "yes", "no"))
        check_choice("feed.ts_unit", self.ts_unit, ("auto", "s", "ms", "us", "ns", "iso"))
        check_choice("feed.side_semantics", self.side_semantics, ("auto", "aggressor", "buyer_maker"))
        check_choice("feed.bar_ts", self.bar_ts, ("open", "close"))
        check_choice("feed.out_of_order", self.out_of_order, ("drop", "sort", "fail"))
        check_range("feed.bar_seconds", self.bar_seconds, 0, 366 * 86400)
        check_range("feed.batch_size", self.batch_size, 1, 1 << 24)
        if any(not p.strip() for p in self.paths):
            raise ConfigError("feed.paths", self.paths, "non-empty file paths")
        if self.delimiter != "auto" and len(self.delimiter) != 1:
            raise ConfigError("feed.delimiter", self.delimiter, "'auto' or a single character")
        if self.ts_format and "%" not in self.ts_format:
            raise ConfigError("feed.ts_format", self.ts_format, "a strptime format such as '%Y%m%d %H:%M:%S'")
        if "%f" in self.ts_format and not self.ts_format.endswith("%f"):
            raise ConfigError("feed.ts_format", self.ts_format, "%f only as the last directive")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("feed.timezone", self.timezone, "an IANA time zone such as 'UTC'") from None
        seen: dict[str, str] = {}
        for code, side in self.side_codes.items():
            key = f"feed.side_codes.{code}"
            if isinstance(side, bool) or side not in (-1, 0, 1):
                raise ConfigError(key, side, "+1 (buyer aggressed), -1 (seller aggressed) or 0 (unknown)")
            low = code.strip().lower()
            if not low:
                raise ConfigError(key, side, "a non-empty code")
            if low in seen:
                raise ConfigError(key, side, f"one entry per code (case-insensitive): {seen[low]!r} "
                                  "is the same code")
            seen[low] = code
        if not (len(self.currency) >= 3 and self.currency.isalnum()):
            raise ConfigError("feed.currency", self.currency, "a currency code such as 'USD'")


def _positive_decimal(key: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ConfigError(key, text, "a positive decimal string") from None
    if not value.is_finite() or value <= 0:
        raise ConfigError(key, text, "a positive decimal string")
    return value
