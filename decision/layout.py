"""The decision side's shared layout: action order, matrix shapes, the 257-value feature vector.

Every model in `decision/` emits probabilities in the canonical order of spec decision.md section 0:
index 0 SELL / short / bearish (-1), 1 HOLD / neutral (0), 2 BUY / long / bullish (+1); so
`action value = index - 1`. The entry-timing head uses WAIT (0), EXECUTE (1), AGGRESSIVE (2).

`LAYOUT_VERSION` names this file's layout. Every checkpoint stores the version it was trained on;
loading refuses a different one (`decision/checkpoint.py`), because a model fed columns in another
order trades on garbage without any error.
"""

from __future__ import annotations

LAYOUT_VERSION = "himari-decision-v1"

# Canonical action order (spec decision.md section 0).
SELL, HOLD, BUY = 0, 1, 2
ACTIONS = ("SELL", "HOLD", "BUY")
WAIT, EXECUTE, AGGRESSIVE = 0, 1, 2
ENTRY_ACTIONS = ("WAIT", "EXECUTE", "AGGRESSIVE")
N_ACTIONS = 3

# Matrix shapes (spec features.md): tactical on 5-minute bars, strategic on 30-minute bars.
TACTICAL_ROWS, TACTICAL_COLS = 60, 7
STRATEGIC_ROWS, STRATEGIC_COLS = 48, 13

# The shared feature vector x of the decision engine D2-D9 (spec decision.md 4.0), 257 values.
FEATURE_DIM = 257
X_TARGET_SHARPE = slice(0, 1)      # D9's target Sharpe
X_TACTICAL = slice(1, 141)         # last 20 tactical rows, oldest first, row-major
X_STRATEGIC = slice(141, 245)      # last 8 strategic rows (latest closed 30-minute bars)
X_REGIME = slice(245, 249)         # one-hot: crisis, bearish, neutral, bullish
X_POSITION = slice(249, 253)       # position sign, unrealised PnL / ATR14, bars in position / 100
                                   # (cap 1), drawdown buffer
X_TIME = slice(253, 257)           # sin/cos hour of day, sin/cos weekday
TACTICAL_TAIL_ROWS = 20
STRATEGIC_TAIL_ROWS = 8
# Slots that are NOT z-scored (one-hots and sin/cos); everything else is, with training statistics.
UNSCALED = (X_REGIME, X_TIME)

# Regimes (spec decision.md D9): index -> name, target Sharpe.
REGIMES = ("crisis", "bearish", "neutral", "bullish")
CRISIS, BEARISH, NEUTRAL, BULLISH = 0, 1, 2, 3
TARGET_SHARPE = (0.5, 1.0, 2.0, 2.5)
DEFAULT_REGIME = NEUTRAL

# Strategic agents' column groups (spec decision.md 3.1, G21) and the 6-value shared context.
MLMI_COLS = (0, 1, 8, 9)
NWRQK_COLS = (2, 3, 4, 5)
REGIME_COLS = (10, 11, 12)
STRATEGIC_CONTEXT_DIM = 6
