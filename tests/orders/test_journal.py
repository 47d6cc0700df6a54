"""The write-ahead journal: checksummed typed JSON lines, flushed (and fsynced when asked) on every
write; a torn or corrupt tail is detected, reported and cut aside, damage before intact records
refuses."""

from __future__ import annotations

import os
import zlib
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from himari.daemon import events as ev
from himari.daemon.orders import journal as journal_mod
from himari.daemon.orders.journal import Journal, JournalCorrupt, JournalError, record_types
from himari.daemon.venue import CancelRequest, OrderRequest

FILL = ev.Fill(event_id="E-1", ts_ns=5, fill_id="F-1", order_id="O-1", client_order_id="C-1",
               instrument_id="ES", side=-1, quantity=3, price=10025,
               fee=Decimal("0.1000000000000000000001"), decision_id="D-1")
SUBMITTED = ev.OrderSubmitted(event_id="E-0", ts_ns=4, order_id="O-1", client_order_id="C-1",
                              instrument_id="ES", side=-1, quantity=3, order_type="limit",
                              price=10025, decision_id="D-1", intent_id="I-1")
REQUEST = OrderRequest(client_order_id="C-1", instrument_id="ES", side=-1, quantity=3,
                       order_type="limit", price=10025, time_in_force="gtc", ts_ns=4,
                       reduce_only=True)


def test_round_trip_keeps_types_and_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "j" / "orders.jsonl"  # parent folders are created
    with Journal(path, fsync=False) as j:
        j.write(SUBMITTED)
        j.write(REQUEST)
        j.write(FILL)
        j.write_raw("CancelRequest", {"ts_ns": 6, "order_id": "O-1", "client_order_id": "C-1"})
        assert j.records == 4
    records = list(Journal.read(path))
    assert [r["type"] for r in records] == ["OrderSubmitted", "OrderRequest", "Fill",
                                            "CancelRequest"]
    assert records[2]["fee"] == "0.1000000000000000000001"  # a string: no float rounding
    assert Journal.decode(records[0]) == SUBMITTED
    assert Journal.decode(records[1]) == REQUEST
    assert Journal.decode(records[2]) == FILL
    assert Journal.decode(records[3]) == CancelRequest(ts_ns=6, order_id="O-1",
                                                       client_order_id="C-1")
    with pytest.raises(JournalError, match="'Nonsense' has no Struct"):
        Journal.decode({"type": "Nonsense"})
    assert path.read_bytes().count(b"\n") == 4


def test_each_write_is_visible_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    j = Journal(path, fsync=False)
    j.write(FILL)
    assert [r["event_id"] for r in Journal.read(path)] == ["E-1"]  # no close, no flush call
    j.write(SUBMITTED)
    assert len(list(Journal.read(path))) == 2
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.write(FILL)


@pytest.mark.parametrize(("fsync", "expected"), [(True, 3), (False, 0)])
def test_fsync_per_write_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool,
                                    expected: int) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(journal_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    j = Journal(tmp_path / "orders.jsonl", fsync=fsync)
    calls.clear()  # opening a new file syncs its directory entry once
    j.write(FILL)
    j.write(FILL)
    assert len(calls) == expected - (1 if fsync else 0)
    j.close()  # close syncs once more in fsync mode
    assert len(calls) == expected


def test_append_across_sessions(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    with Journal(path, fsync=False) as j:
        j.write(SUBMITTED)
    with Journal(path, fsync=False) as j:
        j.write(FILL)
    assert [r["type"] for r in Journal.read(path)] == ["OrderSubmitted", "Fill"]


def _two_record_journal(path: Path) -> bytes:
    with Journal(path, fsync=False) as j:
        j.write(SUBMITTED)
        j.write(FILL)
    return path.read_bytes()


def test_each_line_carries_the_crc32_of_its_json(tmp_path: Path) -> None:
    whole = _two_record_journal(tmp_path / "j.jsonl")
    for line in whole.splitlines():
        crc, _, body = line.partition(b" ")
        assert int(crc, 16) == zlib.crc32(body) and len(crc) == 8
        assert orjson.loads(body)["type"] in ("OrderSubmitted", "Fill")


def test_torn_final_line_is_reported_as_the_cut_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    whole = _two_record_journal(path)
    path.write_bytes(whole[:-20])  # a crash in the middle of the last write
    contents = Journal.read(path)
    assert [r["type"] for r in contents] == ["OrderSubmitted"]
    assert contents.good_size == whole.index(b"\n") + 1
    assert len(contents.cut) == 1 and "line 2" in contents.cut[0] and "torn" in contents.cut[0]
    assert path.read_bytes() == whole[:-20]  # reading never modifies the file


@pytest.mark.parametrize("damage", ["flip_json", "flip_crc", "zeros"])
def test_corrupt_final_record_is_detected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "journal.jsonl"
    whole = _two_record_journal(path)
    first = whole.index(b"\n") + 1
    last = bytearray(whole[first:])
    if damage == "flip_json":
        last[40] ^= 0x01  # one bit in the JSON: still JSON-looking, checksum catches it
    elif damage == "flip_crc":
        last[0] = ord("0") if last[0] != ord("0") else ord("1")
    else:
        last = bytearray(len(last))  # blocks a power loss left unwritten read back as zeros
    path.write_bytes(whole[:first] + bytes(last))
    contents = Journal.read(path)
    assert [r["type"] for r in contents] == ["OrderSubmitted"]
    assert contents.tail_bytes == len(last)
    assert "line 2" in contents.cut[0]


def test_opening_for_append_moves_the_tail_aside_then_truncates(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    whole = _two_record_journal(path)
    path.write_bytes(whole[:-5])
    j = Journal(path, fsync=True)
    assert j.recovered is not None and len(j.recovered) == 1
    assert j.cut_file == tmp_path / "journal.cut-1"
    assert j.cut_file.read_bytes() == whole[whole.index(b"\n") + 1:-5]  # nothing silently lost
    assert "journal.cut-1" in j.recovered.cut[-1]
    j.write(REQUEST)
    j.close()
    contents = Journal.read(path)
    assert [r["type"] for r in contents] == ["OrderSubmitted", "OrderRequest"] and not contents.cut
    path.write_bytes(path.read_bytes() + b"garbage")  # a second crash: a second cut file
    Journal(path, fsync=False).close()
    assert (tmp_path / "journal.cut-2").read_bytes() == b"garbage"
    assert (tmp_path / "journal.cut-1").exists()


def test_damage_before_intact_records_refuses_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    whole = _two_record_journal(path)
    lines = whole.splitlines(keepends=True)
    path.write_bytes(lines[0][:30] + b"X" + lines[0][31:] + lines[1])
    with pytest.raises(JournalCorrupt, match="line 1 is damaged .checksum mismatch. but line 2"):
        Journal.read(path)
    with pytest.raises(JournalCorrupt):
        Journal(path, fsync=False)  # never appends after, nor cuts, acknowledged history
    assert path.read_bytes() == lines[0][:30] + b"X" + lines[0][31:] + lines[1]
    path.write_bytes(b'{"type": "Fill"}\n' + whole)  # a line without a checksum
    with pytest.raises(JournalCorrupt, match="line 1 .*no checksum"):
        Journal.read(path)


def test_every_record_type_the_system_writes_decodes(tmp_path: Path) -> None:
    from himari.daemon import venue

    known = record_types()
    for cls in (ev.OrderIntent, ev.RiskVerdict, ev.OrderSubmitted, ev.OrderAccepted,
                ev.OrderPartiallyFilled, ev.OrderFilled, ev.OrderCancelled, ev.OrderRejected,
                ev.OrderExpired, ev.Fill, ev.PositionUpdate, ev.ExecutionDiscrepancy, ev.Decision,
                venue.OrderRequest, venue.CancelRequest, venue.OrderStatusReport,
                venue.FillReport, venue.PositionReport, venue.AccountReport):
        assert known[cls.__name__] is cls
    records = [
        ev.OrderIntent(event_id="E-1", ts_ns=1, decision_id="D-1", strategy_id="s",
                       instrument_id="ES", side=1, quantity=2, stop_loss=90, take_profit=120),
        ev.RiskVerdict(event_id="E-2", ts_ns=2, intent_id="E-1", decision_id="D-1", approved=True,
                       quantity=2, values={"atr": 1.5}),
        CancelRequest(ts_ns=3, order_id="O-1", client_order_id="C-1", reason="bracket"),
        ev.ExecutionDiscrepancy(event_id="E-3", ts_ns=4, kind="duplicate_fill", exec_id="X-1"),
        ev.PositionUpdate(event_id="E-4", ts_ns=5, instrument_id="ES", quantity=-2,
                          avg_price=Decimal("100.25"), realized_pnl=Decimal("-1.5"),
                          unrealized_pnl=Decimal(0), fees=Decimal("0.01")),
        FILL, SUBMITTED, REQUEST,
    ]
    path = tmp_path / "journal.jsonl"
    with Journal(path, fsync=False) as j:
        for r in records:
            j.write(r)
    assert [Journal.decode(r) for r in Journal.read(path)] == records
