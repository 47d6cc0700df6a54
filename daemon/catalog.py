"""The data catalog: parsed CSV columns kept as Parquet, so a file is parsed once.

The first replay of a CSV (`feed.catalog = true`, the default) stores the ticks it parsed, exactly
as replayed (int64 time in ns, price ticks, size lots, side; bid/ask for quotes), as
`<id>.parquet` beside a manifest `<id>.json` in the catalog directory (`feed.catalog_dir`, else
$HIMARI_CATALOG_DIR, else ~/.cache/himari/catalog). The id is a hash of the file's resolved
path, so one file has one entry. The manifest records:

- the source: path, size, mtime_ns, the sha256 of the whole file and of its first and last 64 KiB;
- the mapping: every `[feed]` setting that changes what a parse yields (format, columns, time
  unit and zone, side codes, time-order policy, ...) and the tick and lot size asked for;
- what was read: kind, instrument grid (tick, lot, currency), bar period, the feed's statistics
  and description, the resolved columns; and the himari version.

An entry is used when the version and the mapping are equal and the file is the same: same size
and either the same mtime and the same head/tail hash, or (after a touch) the same full sha256.
Anything else is a miss, and the entry is replaced by the new parse. A replay through the catalog
yields exactly the ticks, statistics and description of a fresh parse. Writes go to a temporary
name and are renamed, the manifest last, so a crash leaves no half entry. Parquet inputs are not
cached (they are columnar already).

Bounded memory: a streamed CSV (feeds/blocks.py) is written block by block as it is first read
(`CatalogWriter`, one row group per block, on each block's own grid with the runs that put them
on the file's grid in `grid_runs`), and an entry is read back by record batches, never whole.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from himari import __version__
from himari.daemon.events import TickBatch, TickKind
from himari.daemon.feeds.base import FeedStats
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import FileFeed, open_file_feed
from himari.daemon.instruments import Instrument

ENV = "HIMARI_CATALOG_DIR"
FORMAT = 2  # manifest layout: 2 = ticks stored by blocks with their grid runs, first/last time
_EDGE = 65536
_PARQUET = (".parquet", ".pq", ".parq")
# [feed] keys that do not change a file's parse (where it comes from, batching, the catalog itself)
_NOT_MAPPING = ("kind", "paths", "symbols", "batch_size", "catalog", "catalog_dir", "synthetic")


def catalog_dir(cfg: FeedConfig) -> Path:
    text = cfg.catalog_dir or os.environ.get(ENV, "") or "~/.cache/himari/catalog"
    return Path(text).expanduser()


def mapping(cfg: FeedConfig, tick: Decimal | None, lot: Decimal | None) -> dict[str, Any]:
    d = {k: v for k, v in msgspec.to_builtins(cfg).items() if k not in _NOT_MAPPING}
    d["tick_size"] = None if tick is None else str(tick)
    d["lot_size"] = None if lot is None else str(lot)
    return d


def entry_id(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]


def _edges_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE))
        if size > _EDGE:
            fh.seek(max(_EDGE, size - _EDGE))
            h.update(fh.read(_EDGE))
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "edges_sha256": _edges_sha256(path, st.st_size)}


def _same_source(man: dict[str, Any], path: Path) -> bool:
    src = man.get("source", {})
    now = _fingerprint(path)
    if src.get("size") != now["size"]:
        return False
    if src.get("mtime_ns") == now["mtime_ns"] and src.get("edges_sha256") == now["edges_sha256"]:
        return True
    return src.get("sha256") == _file_sha256(path)  # touched, or rewritten with the same size


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        man = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return man if isinstance(man, dict) else None


def lookup(path: Path, cfg: FeedConfig, tick: Decimal | None,
           lot: Decimal | None) -> tuple[Path, dict[str, Any]] | None:
    """The entry (parquet path, manifest) for this file and mapping, if it is current."""
    base = catalog_dir(cfg) / entry_id(path)
    man = read_manifest(base.with_suffix(".json"))
    if man is None or man.get("himari_version") != __version__ or man.get("format") != FORMAT:
        return None
    if man.get("mapping") != orjson.loads(orjson.dumps(mapping(cfg, tick, lot))):
        return None
    pq_path = base.with_suffix(".parquet")
    if not pq_path.is_file() or not _same_source(man, path):
        return None
    return pq_path, man


def _parquet_batches(pq_path: Path, instrument_id: str, kind: TickKind) -> Iterator[TickBatch]:
    """The stored ticks by record batches (row group after row group), never the whole file."""
    from himari.daemon.feeds.files import BLOCK_ROWS
    from himari.daemon.feeds.tables import open_parquet_stream

    pf = open_parquet_stream(pq_path)
    for rb in pf.iter_batches(batch_size=BLOCK_ROWS):
        # writable copies: a read-only array is another Numba type (the kernels would compile again)
        col = {name: rb.column(i).to_numpy(zero_copy_only=False, writable=True)
               for i, name in enumerate(rb.schema.names)}
        if kind == TickKind.TRADES:
            yield TickBatch.from_trades(instrument_id, col["ts_ns"], col["price"], col["size"],
                                        col["side"])
        else:
            yield TickBatch(instrument_id=instrument_id, kind=kind, ts_ns=col["ts_ns"],
                            price=col["price"], size=col["size"], side=col["side"],
                            bid=col["bid"], ask=col["ask"])


def _stored_reader(pq_path: Path, man: dict[str, Any],
                   instrument_id: str) -> Callable[[], Iterator[TickBatch]]:
    from himari.daemon.feeds.blocks import Ratio, reader

    import pyarrow.parquet as pq

    # a damaged or missing entry is a miss now (re-parsed), not an error at some later batch
    if pq.ParquetFile(pq_path).metadata.num_rows != int(man["ticks"]):
        raise ValueError(f"{pq_path.name}: row count differs from its manifest")
    kind = TickKind(man["tick_kind"])
    runs = [Ratio(*map(int, r)) for r in man.get("grid_runs", [])]
    return reader(lambda: _parquet_batches(pq_path, instrument_id, kind), runs)


def load(pq_path: Path, man: dict[str, Any], cfg: FeedConfig, instrument_id: str) -> FileFeed:
    s = dict(man["stats"])
    s["malformed_rows"] = [(int(a), str(b)) for a, b in s.get("malformed_rows", [])]
    inst = man["instrument"]
    feed = FileFeed(path=man["source"]["path"], instrument=Instrument(
                        id=instrument_id, tick_size=Decimal(inst["tick_size"]),
                        lot_size=Decimal(inst["lot_size"]), currency=inst["currency"]),
                    kind=man["kind"], describe=man["describe"], ticks=None,
                    stats=FeedStats(**s), batch_size=cfg.batch_size,
                    bar_seconds=man["bar_seconds"], roles=dict(man.get("columns", {})),
                    blocks=_stored_reader(pq_path, man, instrument_id),
                    span=(int(man["ticks"]), int(man["first_ts"]), int(man["last_ts"])))
    feed.catalog = "read"
    return feed


class CatalogWriter:
    """Writes one entry as the feed is read: each block of ticks goes to the Parquet file as it
    comes (a row group each, so the catalog never holds a file in memory), the manifest at the
    end. A write error is kept and raised by `finish` (the replay goes on without the entry)."""

    def __init__(self, path: Path, cfg: FeedConfig, tick: Decimal | None,
                 lot: Decimal | None) -> None:
        self.path, self.cfg, self.tick, self.lot = path, cfg, tick, lot
        self.base = catalog_dir(cfg) / entry_id(path)
        tmp = f".tmp-{os.getpid()}"
        self.pq_tmp = self.base.with_name(self.base.name + tmp + ".parquet")
        self.man_tmp = self.base.with_name(self.base.name + tmp + ".json")
        self._writer: Any = None
        self.error: OSError | None = None

    def write(self, t: TickBatch) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.error is not None or len(t) == 0:
            return
        cols = {"ts_ns": t.ts_ns, "price": t.price, "size": t.size, "side": t.side}
        if t.kind != TickKind.TRADES:
            cols |= {"bid": t.bid, "ask": t.ask}
        table = pa.table({k: pa.array(np.asarray(v)) for k, v in cols.items()})
        try:
            if self._writer is None:
                self.base.parent.mkdir(parents=True, exist_ok=True)
                self._writer = pq.ParquetWriter(self.pq_tmp, table.schema, compression="lz4")
            self._writer.write_table(table)
        except OSError as exc:
            self.error = exc
            self.abort()

    def write_all(self, t: TickBatch, rows: int = 1 << 20) -> None:
        for start in range(0, len(t), rows):
            self.write(t.slice(start, min(start + rows, len(t))))

    def abort(self) -> None:
        """Drop what was written (the feed is read whole after all, or writing failed)."""
        w, self._writer = self._writer, None
        if w is not None:
            try:
                w.close()
            except OSError:
                pass
        self.pq_tmp.unlink(missing_ok=True)

    def finish(self, feed: FileFeed, runs: list[Any]) -> Path:
        """Close the Parquet file and write the manifest; returns the Parquet path."""
        if self.error is not None:
            raise self.error
        if self._writer is None:
            raise OSError(0, "no ticks to store")
        self._writer.close()
        self._writer = None
        source = _fingerprint(self.path) | {"sha256": _file_sha256(self.path)}
        inst = feed.instrument
        man = {"himari_version": __version__, "format": FORMAT,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "source": source, "mapping": mapping(self.cfg, self.tick, self.lot),
               "columns": feed.roles, "kind": feed.kind,
               "tick_kind": int(TickKind.TRADES if feed.kind != "quotes" else TickKind.QUOTES),
               "bar_seconds": feed.bar_seconds,
               "instrument": {"id": inst.id, "tick_size": str(inst.tick_size),
                              "lot_size": str(inst.lot_size), "currency": inst.currency},
               "ticks": feed.expected_ticks, "first_ts": feed.first_ts, "last_ts": feed.last_ts,
               "grid_runs": [list(r) for r in runs], "describe": feed.describe,
               "stats": msgspec.to_builtins(feed.stats.__dict__)}
        self.man_tmp.write_bytes(orjson.dumps(man, option=orjson.OPT_INDENT_2))
        pq_path = self.base.with_suffix(".parquet")
        os.replace(self.pq_tmp, pq_path)
        os.replace(self.man_tmp, self.base.with_suffix(".json"))
        return pq_path


def store(path: Path, feed: FileFeed, cfg: FeedConfig, tick: Decimal | None,
          lot: Decimal | None) -> Path:
    """Write a feed read whole (its ticks and manifest); returns the manifest path."""
    w = CatalogWriter(path, cfg, tick, lot)
    w.write_all(feed.ticks)
    try:
        w.finish(feed, [])
    except OSError:
        w.abort()
        raise
    return w.base.with_suffix(".json")


def cacheable(path: Path, cfg: FeedConfig) -> bool:
    return cfg.catalog and path.suffix.lower() not in _PARQUET


def open_cached(path: str | Path, cfg: FeedConfig, instrument_id: str,
                tick: Decimal | None = None, lot: Decimal | None = None) -> FileFeed:
    """`open_file_feed` through the catalog: a current entry is read, else the file is parsed
    (once: streamed blocks are stored as they are read, and the replay then reads the stored
    copy) and stored (a catalog that cannot be written only costs the speed-up)."""
    p = Path(path)
    if not (p.is_file() and cacheable(p, cfg)):
        return open_file_feed(p, cfg, instrument_id, tick, lot)
    hit = lookup(p, cfg, tick, lot)
    if hit is not None:
        try:
            return load(*hit, cfg, instrument_id)
        except (OSError, ValueError, KeyError, TypeError):  # a damaged entry: parse again
            pass
    sink = CatalogWriter(p, cfg, tick, lot)
    feed = open_file_feed(p, cfg, instrument_id, tick, lot, sink=sink)
    try:
        if not feed.streamed:
            sink.abort()  # a whole read: anything a first streaming attempt wrote is void
            sink.write_all(feed.ticks)
        pq_path = sink.finish(feed, getattr(feed, "grid_runs", []))
        feed.catalog = "stored"
        if feed.streamed:  # read the stored copy from now on: the CSV is parsed once
            man = read_manifest(sink.base.with_suffix(".json")) or {}
            feed._blocks = _stored_reader(pq_path, man, instrument_id)
    except OSError as exc:
        sink.abort()
        feed.catalog = f"not stored ({exc.strerror or exc})"
    return feed


def entries(cfg: FeedConfig) -> list[dict[str, Any]]:
    """Every manifest in the catalog with a `state`: current, changed (the source differs) or
    missing (the source is gone)."""
    root = catalog_dir(cfg)
    out = []
    for man_path in sorted(root.glob("*.json")) if root.is_dir() else []:
        man = read_manifest(man_path)
        if man is None or "source" not in man:
            continue
        src = Path(man["source"]["path"])
        state = ("missing" if not src.is_file() else
                 "current" if _same_source(man, src) and man.get("himari_version") == __version__
                 else "changed")
        pq_path = man_path.with_suffix(".parquet")
        out.append({"id": man_path.stem, "source": str(src), "state": state, "kind": man["kind"],
                    "ticks": man["ticks"], "tick_size": man["instrument"]["tick_size"],
                    "lot_size": man["instrument"]["lot_size"], "created": man.get("created", ""),
                    "parquet_bytes": pq_path.stat().st_size if pq_path.is_file() else 0,
                    "source_bytes": man["source"]["size"]})
    return out


def import_files(cfg: Any, paths: list[str]) -> list[str]:
    """`himari data import`: put each CSV in the catalog with the grid a replay would use;
    returns one line per file."""
    from himari.daemon.configbase import ConfigError
    from himari.daemon.sources import check_data_paths, split_inputs

    check_data_paths(paths, cfg.instrument.id)
    feed_cfg = msgspec.structs.replace(cfg.feed, catalog=True)
    icfg = cfg.instrument
    lines = []
    for inst_id, group in split_inputs(paths, icfg.id):
        tick = None if icfg.tick_size == "auto" else Decimal(icfg.tick_size)
        lot = None if icfg.lot_size == "auto" else Decimal(icfg.lot_size)
        for path in group:
            if not cacheable(Path(path), feed_cfg):
                raise ConfigError("FILE", path, "a CSV file (Parquet is read directly)")
            feed = open_cached(path, feed_cfg, inst_id, tick, lot)
            state = "up to date" if feed.catalog == "read" else feed.catalog
            lines.append(f"{path}: {state}; {feed.describe}")
            if tick is None:  # later files of an instrument use the first one's grid, as a replay
                tick = feed.instrument.tick_size
            if lot is None:
                lot = feed.instrument.lot_size
    return lines
