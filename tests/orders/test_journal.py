"""The write-ahead journal: typed JSON lines, flushed (and fsynced when asked) on every write."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from himari.daemon import events as ev
from himari.daemon.orders import journal as journal_mod
from himari.daemon.orders.journal import Journal, JournalError
from himari.daemon.venue import OrderRequest

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
        j.write_raw("CancelRequest", {"ts_ns": 6, "order_id": "O-1"})
        assert j.records == 4
    records = list(Journal.read(path))
    assert [r["type"] for r in records] == ["OrderSubmitted", "OrderRequest", "Fill",
                                            "CancelRequest"]
    assert records[2]["fee"] == "0.1000000000000000000001"  # a string: no float rounding
    assert Journal.decode(records[0]) == SUBMITTED
    assert Journal.decode(records[1]) == REQUEST
    assert Journal.decode(records[2]) == FILL
    with pytest.raises(JournalError, match="CancelRequest"):
        Journal.decode(records[3])
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


def test_torn_final_line_is_skipped_but_corruption_raises(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    with Journal(path, fsync=False) as j:
        j.write(SUBMITTED)
        j.write(FILL)
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])  # a crash in the middle of the last write
    assert [r["type"] for r in Journal.read(path)] == ["OrderSubmitted"]
    path.write_bytes(b'{"type": "Fill", "x"\n' + whole)
    with pytest.raises(JournalError, match="line 1"):
        list(Journal.read(path))
    path.write_bytes(b'{"no_type": 1}\n')
    with pytest.raises(JournalError, match="no record type"):
        list(Journal.read(path))

