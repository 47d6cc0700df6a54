"""Torch modules of the strategic and tactical teams (training only; run time uses numpy/Numba).

Strategic (spec decision.md 3.2-3.4): per agent an MLP with "Linear, ReLU, Dropout, LayerNorm" per
hidden layer and a 3-logit head, a learned temperature tau = softplus(rho) + 0.05 (G24, rho starts
where tau = 1), the regime agent's logits scaled by clamp(1 / volatility_30, 0.5, 2.0) (G31); the
ensemble weights softmax(omega), omega initialised to ln(0.4, 0.35, 0.25) (G25); the centralised
critic on 28 inputs (13 column means, 6 context values, the 9 agent probabilities; G29).

Tactical (spec 2.3, 2.5): per actor a learned per-feature weight (G9 initialisation), Conv1d,
ReLU, Conv1d, ReLU, AdaptiveAvgPool1d, Linear, ReLU, policy head -> 3 logits (G10); the critic on
the 428-value state (G13) with one value head per agent (G14).

`strategic_tensors` / `tactical_tensors` export the weights under the names the run-time loaders
read (float32); `strategic_from_tensors` / `tactical_from_tensors` rebuild the modules (tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TAU_MIN = 0.05
INITIAL_OMEGA = (0.4, 0.35, 0.25)
STRATEGIC_AGENTS = ("mlmi", "nwrqk", "regime")
TACTICAL_AGENTS = ("fvg", "momentum", "entry")
# G9: the seed's third weight repeated for columns 2-4.
FEATURE_WEIGHT_INIT = {
    "fvg": (0.4, 0.4, 0.1, 0.1, 0.1, 0.05, 0.05),
    "momentum": (0.05, 0.05, 0.1, 0.1, 0.1, 0.3, 0.5),
    "entry": (0.2,) * 7,
}
TACTICAL_CRITIC_IN = 60 * 7 + 4 + 1 + 1 + 1 + 1  # 428 (G13)
STRATEGIC_CRITIC_IN = 13 + 6 + 9                  # 28 (G29)


def _rho_for_tau(tau: float) -> float:
    """Inverse of softplus(rho) + TAU_MIN."""
    return math.log(math.expm1(tau - TAU_MIN))


def vol_factor(volatility_30: torch.Tensor) -> torch.Tensor:
    """clamp(1 / volatility_30, 0.5, 2.0); a non-positive volatility counts as tiny (factor 2)."""
    inv = 1.0 / torch.clamp(volatility_30, min=1e-12)
    return torch.clamp(inv, 0.5, 2.0)


class LNStack(nn.Module):
    """Linear, ReLU, Dropout, LayerNorm per hidden size (spec 3.2's order)."""

    def __init__(self, n_in: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = n_in
        for h in hidden:
            self.linears.append(nn.Linear(prev, h))
            self.norms.append(nn.LayerNorm(h))
            prev = h
        self.dropout = nn.Dropout(dropout)
        self.width = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, norm in zip(self.linears, self.norms):
            x = norm(self.dropout(F.relu(lin(x))))
        return x


class StrategicPolicy(nn.Module):
    def __init__(self, n_in: int, hidden: Sequence[int], dropout: float,
                 vol_scaled: bool = False) -> None:
        super().__init__()
        self.body = LNStack(n_in, hidden, dropout)
        self.head = nn.Linear(self.body.width, 3)
        self.rho = nn.Parameter(torch.tensor(_rho_for_tau(1.0)))
        self.vol_scaled = vol_scaled

    def tau(self) -> torch.Tensor:
        return F.softplus(self.rho) + TAU_MIN

    def forward(self, x: torch.Tensor, volatility_30: torch.Tensor | None = None) -> torch.Tensor:
        """Tempered logits (softmax of them = the agent's probabilities)."""
        z = self.head(self.body(x)) / self.tau()
        if self.vol_scaled:
            if volatility_30 is None:
                raise ValueError("the regime policy needs volatility_30")
            z = z * vol_factor(volatility_30).reshape(-1, 1)
        return z


class StrategicCritic(nn.Module):
    """V(state 19 + probs 9); one value per agent (each agent's own reward stream)."""

    def __init__(self, hidden: Sequence[int] = (64, 64), dropout: float = 0.0,
                 n_out: int = 3) -> None:
        super().__init__()
        self.body = LNStack(STRATEGIC_CRITIC_IN, hidden, dropout)
        self.head = nn.Linear(self.body.width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class StrategicTeamNet(nn.Module):
    def __init__(self, hidden: Sequence[int] = (32, 32),
                 dropout: Sequence[float] = (0.1, 0.1, 0.15),
                 n_in: Sequence[int] = (10, 10, 9)) -> None:
        super().__init__()
        self.hidden = tuple(int(h) for h in hidden)
        self.policies = nn.ModuleList([
            StrategicPolicy(n_in[i], hidden, dropout[i], vol_scaled=(i == 2)) for i in range(3)])
        self.omega = nn.Parameter(torch.log(torch.tensor(INITIAL_OMEGA)))

    def forward(self, xs: Sequence[torch.Tensor],
                volatility_30: torch.Tensor) -> list[torch.Tensor]:
        """Tempered logits per agent, each (batch, 3); inputs already z-scored."""
        return [p(x, volatility_30) for p, x in zip(self.policies, xs)]

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.omega, dim=0)


class TacticalActor(nn.Module):
    def __init__(self, feature_init: Sequence[float], channels: tuple[int, int] = (16, 16),
                 pool: int = 8, fc: int = 64, head: int = 32) -> None:
        super().__init__()
        self.feature_weight = nn.Parameter(torch.tensor(feature_init, dtype=torch.float32))
        self.conv1 = nn.Conv1d(7, channels[0], 3, padding=1)
        self.conv2 = nn.Conv1d(channels[0], channels[1], 3, padding=1)
        self.pool = nn.AdaptiveAvgPool1d(pool)
        self.fc = nn.Linear(channels[1] * pool, fc)
        self.head1 = nn.Linear(fc, head)
        self.head2 = nn.Linear(head, 3)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """m (batch, 60, 7) -> logits (batch, 3)."""
        x = (m * self.feature_weight).transpose(1, 2)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.pool(x).flatten(1)
        x = F.relu(self.fc(x))
        return self.head2(F.relu(self.head1(x)))


class TacticalCritic(nn.Module):
    """V(428-value state) with 3 heads, one per agent's reward stream (G13, G14)."""

    def __init__(self, hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = TACTICAL_CRITIC_IN
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


class TacticalTeamNet(nn.Module):
    def __init__(self, channels: tuple[int, int] = (16, 16), pool: int = 8, fc: int = 64,
                 head: int = 32) -> None:
        super().__init__()
        self.sizes = {"channels": list(channels), "pool": pool, "fc": fc, "head": head}
        self.actors = nn.ModuleList([
            TacticalActor(FEATURE_WEIGHT_INIT[a], channels, pool, fc, head)
            for a in TACTICAL_AGENTS])

    def forward(self, m: torch.Tensor) -> list[torch.Tensor]:
        return [a(m) for a in self.actors]


# --- export / import --------------------------------------------------------------------------

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def strategic_tensors(team: StrategicTeamNet, norm_mean: Sequence[np.ndarray],
                      norm_std: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Weights by name for decision/nets/strategic.py; norm_* per agent (10, 10, 9 values)."""
    out: dict[str, np.ndarray] = {"omega": _np(team.omega)}
    for i, (name, pol) in enumerate(zip(STRATEGIC_AGENTS, team.policies)):
        for k, (lin, ln) in enumerate(zip(pol.body.linears, pol.body.norms)):
            out[f"{name}.l{k}.weight"] = _np(lin.weight)
            out[f"{name}.l{k}.bias"] = _np(lin.bias)
            out[f"{name}.l{k}.ln_weight"] = _np(ln.weight)
            out[f"{name}.l{k}.ln_bias"] = _np(ln.bias)
        out[f"{name}.out.weight"] = _np(pol.head.weight)
        out[f"{name}.out.bias"] = _np(pol.head.bias)
        out[f"{name}.rho"] = _np(pol.rho).reshape(1)
        out[f"{name}.norm_mean"] = np.asarray(norm_mean[i], dtype=np.float32)
        out[f"{name}.norm_std"] = np.asarray(norm_std[i], dtype=np.float32)
    return out


def tactical_tensors(team: TacticalTeamNet) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, actor in zip(TACTICAL_AGENTS, team.actors):
        out[f"{name}.feature_weight"] = _np(actor.feature_weight)
        for part in ("conv1", "conv2", "fc", "head1", "head2"):
            mod = getattr(actor, part)
            out[f"{name}.{part}.weight"] = _np(mod.weight)
            out[f"{name}.{part}.bias"] = _np(mod.bias)
    return out


def _load(module: nn.Module, name: str, tensors: dict[str, np.ndarray]) -> None:
    module.data.copy_(torch.from_numpy(np.asarray(tensors[name], dtype=np.float32)))


def strategic_from_tensors(tensors: dict[str, np.ndarray], hidden: Sequence[int]
                           ) -> StrategicTeamNet:
    """A StrategicTeamNet holding exported weights (for checks and fine-tuning)."""
    n_in = [int(tensors[f"{a}.l0.weight"].shape[1]) for a in STRATEGIC_AGENTS]
    team = StrategicTeamNet(hidden, n_in=n_in)
    with torch.no_grad():
        _load(team.omega, "omega", tensors)
        for name, pol in zip(STRATEGIC_AGENTS, team.policies):
            for k, (lin, ln) in enumerate(zip(pol.body.linears, pol.body.norms)):
                _load(lin.weight, f"{name}.l{k}.weight", tensors)
                _load(lin.bias, f"{name}.l{k}.bias", tensors)
                _load(ln.weight, f"{name}.l{k}.ln_weight", tensors)
                _load(ln.bias, f"{name}.l{k}.ln_bias", tensors)
            _load(pol.head.weight, f"{name}.out.weight", tensors)
            _load(pol.head.bias, f"{name}.out.bias", tensors)
            pol.rho.copy_(torch.tensor(float(np.asarray(tensors[f"{name}.rho"]).ravel()[0])))
    return team
