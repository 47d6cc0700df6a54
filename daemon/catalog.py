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
"""

from __future__ import annotations

import hashlib
import os
import time
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
    if man is None or man.get("himari_version") != __version__:
        return None
    if man.get("mapping") != orjson.loads(orjson.dumps(mapping(cfg, tick, lot))):
        return None
    pq_path = base.with_suffix(".parquet")
    if not pq_path.is_file() or not _same_source(man, path):
        return None
    return pq_path, man


def load(pq_path: Path, man: dict[str, Any], cfg: FeedConfig, instrument_id: str) -> FileFeed:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(pq_path).read()  # read_table would import pyarrow.dataset (~0.3 s)
    col = {name: table.column(name).to_numpy() for name in table.column_names}
    kind = TickKind(man["tick_kind"])
    if kind == TickKind.TRADES:
        batch = TickBatch.from_trades(instrument_id, col["ts_ns"], col["price"], col["size"],
                                      col["side"])
    else:
        batch = TickBatch(instrument_id=instrument_id, kind=kind, ts_ns=col["ts_ns"],
                          price=col["price"], size=col["size"], side=col["side"], bid=col["bid"],
                          ask=col["ask"])
    s = dict(man["stats"])
    s["malformed_rows"] = [(int(a), str(b)) for a, b in s.get("malformed_rows", [])]
    inst = man["instrument"]
    feed = FileFeed(path=man["source"]["path"], instrument=Instrument(
                        id=instrument_id, tick_size=Decimal(inst["tick_size"]),
                        lot_size=Decimal(inst["lot_size"]), currency=inst["currency"]),
                    kind=man["kind"], describe=man["describe"], ticks=batch,
                    stats=FeedStats(**s), batch_size=cfg.batch_size,
                    bar_seconds=man["bar_seconds"], roles=dict(man.get("columns", {})))
    feed.catalog = "read"
    return feed


def store(path: Path, feed: FileFeed, cfg: FeedConfig, tick: Decimal | None,
          lot: Decimal | None) -> Path:
    """Write the feed's ticks and manifest; returns the manifest path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = catalog_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    base = root / entry_id(path)
    t = feed.ticks
    cols = {"ts_ns": t.ts_ns, "price": t.price, "size": t.size, "side": t.side}
    if t.kind != TickKind.TRADES:
        cols |= {"bid": t.bid, "ask": t.ask}
    source = _fingerprint(path) | {"sha256": _file_sha256(path)}
    tmp = f".tmp-{os.getpid()}"
    pq_tmp = base.with_name(base.name + tmp + ".parquet")
    pq.write_table(pa.table({k: pa.array(np.asarray(v)) for k, v in cols.items()}), pq_tmp,
                   compression="lz4")
    inst = feed.instrument
    man = {"himari_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "source": source, "mapping": mapping(cfg, tick, lot), "columns": feed.roles,
           "kind": feed.kind, "tick_kind": int(t.kind), "bar_seconds": feed.bar_seconds,
           "instrument": {"id": inst.id, "tick_size": str(inst.tick_size),
                          "lot_size": str(inst.lot_size), "currency": inst.currency},
           "ticks": len(t), "describe": feed.describe,
           "stats": msgspec.to_builtins(feed.stats.__dict__)}
    man_tmp = base.with_name(base.name + tmp + ".json")
    man_tmp.write_bytes(orjson.dumps(man, option=orjson.OPT_INDENT_2))
    os.replace(pq_tmp, base.with_suffix(".parquet"))
    os.replace(man_tmp, base.with_suffix(".json"))
    return base.with_suffix(".json")


def cacheable(path: Path, cfg: FeedConfig) -> bool:
    return cfg.catalog and path.suffix.lower() not in _PARQUET


def open_cached(path: str | Path, cfg: FeedConfig, instrument_id: str,
                tick: Decimal | None = None, lot: Decimal | None = None) -> FileFeed:
    """`open_file_feed` through the catalog: a current entry is read, else the file is parsed
    and stored (a catalog that cannot be written only costs the speed-up)."""
    p = Path(path)
    if not (p.is_file() and cacheable(p, cfg)):
        return open_file_feed(p, cfg, instrument_id, tick, lot)
    hit = lookup(p, cfg, tick, lot)
    if hit is not None:
        try:
            return load(*hit, cfg, instrument_id)
        except (OSError, ValueError, KeyError, TypeError):  # a damaged entry: parse again
            pass
    feed = open_file_feed(p, cfg, instrument_id, tick, lot)
    try:
        store(p, feed, cfg, tick, lot)
        feed.catalog = "stored"
    except OSError as exc:
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
