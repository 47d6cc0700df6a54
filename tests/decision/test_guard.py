"""Robustness rules: bad matrices, failing / slow agents, benching (decision/guard.py)."""

from __future__ import annotations

import numpy as np
import pytest

from himari.decision.guard import (CLIP, COOLDOWN_NS, AgentGuard, InputError, check_matrix,
                                   check_probs)


def test_check_matrix_accepts_and_casts():
    m = check_matrix(np.zeros((48, 13), dtype=np.float64), 48, 13, "strategic")
    assert m.dtype == np.float32 and m.shape == (48, 13)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((30, 13), dtype=np.float32), "shape (30, 13), expected (48, 13)"),
    (np.zeros((48,), dtype=np.float32), "shape (48,)"),
    (None, "missing"),
])
def test_check_matrix_refuses_wrong_shape(bad, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_matrix(bad, 48, 13, "strategic")


def test_check_matrix_refuses_non_finite_with_count():
    m = np.zeros((48, 13), dtype=np.float32)
    m[3, 4], m[7, 1] = np.nan, np.inf
    with pytest.raises(InputError, match="2 non-finite"):
        check_matrix(m, 48, 13, "strategic")


def test_check_matrix_clips_extremes():
    m = np.zeros((60, 7), dtype=np.float32)
    m[0, 0], m[1, 1] = 3e38, -1e20
    out = check_matrix(m, 60, 7, "tactical")
    assert out[0, 0] == CLIP and out[1, 1] == -CLIP and np.isfinite(out).all()


def test_check_probs_normalises_and_refuses_garbage():
    assert check_probs((1.0, 1.0, 2.0)) == pytest.approx([0.25, 0.25, 0.5])
    for bad in ((np.nan, 0.5, 0.5), (0.0, 0.0, 0.0), (-0.1, 0.6, 0.5), (0.5, 0.5)):
        with pytest.raises(ValueError):
            check_probs(bad)


def test_five_consecutive_failures_bench_for_ten_minutes_of_event_time():
    g = AgentGuard("cql")
    t = 1_000
    for k in range(4):
        g.failure(t + k, "boom")
        assert g.available(t + k + 1)
    g.success()  # a success resets the streak
    for k in range(5):
        assert g.available(t + 10 + k)
        g.failure(t + 10 + k, "boom")
    assert g.bench_count == 1
    benched_at = t + 14
    assert not g.available(benched_at + COOLDOWN_NS - 1)
    assert g.benched_skips == 1
    assert g.available(benched_at + COOLDOWN_NS)
    assert g.failed == 9 and g.stats()["benched"] == 1 and g.last_error == "boom"


def test_time_budget_zero_is_off():
    assert not AgentGuard("a", 0).over_budget(10**12)
    g = AgentGuard("a", 500)
    assert not g.over_budget(500_000) and g.over_budget(500_001)
    g.failure(0, "slow", timeout=True)
    assert g.timeouts == 1 and g.failed == 0


def test_registry_loads_disables_and_refuses(monkeypatch, tmp_path):
    """Missing module / checkpoint: disabled (refused when required); bad checkpoint: refused."""
    from himari.decision import registry
    from himari.decision.checkpoint import CheckpointError, CheckpointMissing

    def resolve(path):
        name = path.split(":")[0].rsplit(".", 1)[-1]
        if name == "cql":
            return lambda directory, n: ("cql-agent", directory, n)
        if name == "sac":
            def missing(directory, n):
                raise CheckpointMissing("checkpoint 'sac' not found")
            return missing
        if name == "cgdt":
            def bad(directory, n):
                raise CheckpointError("layout_version='v0'")
            return bad
        if name == "tactical":
            return lambda directory: "tactical-team"
        raise ImportError(f"No module named {path!r}")

    monkeypatch.setattr(registry, "resolve", resolve)
    loaded, disabled = registry.load_all(["cql", "sac", "ppo_lstm", "tactical"], tmp_path)
    assert loaded == {"cql": ("cql-agent", tmp_path, "cql"), "tactical": "tactical-team"}
    assert set(disabled) == {"sac", "ppo_lstm"} and "not found" in disabled["sac"]
    with pytest.raises(registry.RegistryError) as err:
        registry.load_all(["cql", "sac"], tmp_path, required=["sac"])
    assert err.value.reason == "required"
    with pytest.raises(registry.RegistryError, match="layout_version") as err:
        registry.load_all(["cgdt"], tmp_path)
    assert err.value.reason == "checkpoint"
    with pytest.raises(registry.RegistryError) as err:
        registry.load_all(["nope"], tmp_path)
    assert err.value.reason == "unknown"
    monkeypatch.setattr(registry, "ALL_VOTERS", ("cql", "sac", "tactical"))
    assert registry.available_agents(tmp_path) == ["cql", "tactical"]
