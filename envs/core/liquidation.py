"""Venue liquidation modes: each venue's engine as a named, sourced parameter set.

``RiskParams.liquidation_mode`` (code = index in :data:`fundgym.envs.core.params.LIQUIDATION_MODES`)
picks the engine :func:`fundgym.envs.core.kernels.waterfall_kernel` runs. ``partial`` is the
engine before the venue modes, one order per account per tick (:func:`~fundgym.envs.core.kernels.
_waterfall_one`, unchanged). The four venue modes run the tick as **sub-steps**
(:func:`~fundgym.envs.core.kernels._venue_one`): a dYdX block or a Hyperliquid check is one
second, so a one-minute tick holds 60 of them, while the takeover venues need one.

**The intra-tick path.** Sub-step ``j`` of ``J`` reads the oracle, and the book its fills walk
from, at :func:`path_price`: linear in log price from the previous tick's value to this tick's,
``prev x (now / prev) ** ((j + 1) / J)``, so the last sub-step reads the tick's own price and
an engine checking every second meets each account as the price crosses its maintenance level,
as the venue's does, instead of finding it past bankruptcy a minute later. The path is
monotone, so an account liquidatable anywhere on it is liquidatable at the tick's oracle and
the tick's scan still lists every account the sub-steps can meet (except one the previous
tick left liquidatable, by a slice or a dYdX block late in it, whose price then recovers). It
is deterministic [E]: a Brownian bridge with the tick's volatility would bend it by about half
the minute's volatility at mid-tick, liquidating some accounts on dips the minute's price
recovers from (which the scan would then have to find), while one second of it, 1/60 of the
minute's variance, is far too small to carry an account from maintenance past bankruptcy: it
would move the liquidations' timing, not the share past bankruptcy, and is left out. An
episode's first tick has no previous tick and reads its own prices throughout; one sub-step
(``binance``, ``bitmex``) reads only the tick's. Each sub-step:

1. re-checks every account the tick's scan listed, at the sub-step's oracle (an account a
   slice brought back above its maintenance requirement is left alone until the path takes it
   below again). A sub-step where none needs an order is skipped, by bisection along the path,
   to the first where one does (:func:`~fundgym.envs.core.kernels._next_order_step`); the tick
   is done when none is below its requirement even at the tick's oracle;
2. sizes each remaining account's order by the mode's rule (below);
3. prices the sub-step's orders with the tick's square-root book: one average price per side,
   ``book x (1 -/+ 2/3 x |expm1(-/+ 0.01 x sqrt(flow / depth))|)`` (buys at most 0.9 above)
   from the sub-step's ``book`` on the path,
   on *that sub-step's* flow, so the book is taken to refill between sub-steps [E] (the
   permanent impact of the whole tick's flow still moves the next tick's prices);
4. refuses orders whose price breaches the mode's limit (``dydx_v4``'s fillable price,
   ``hyperliquid``'s bankruptcy price for a market order) and prices the rest again on their
   own flow (one pass: a refused order is not re-admitted). A refused order of a solvent
   account waits: the path takes it on to the next sub-step, or the backstop band;
5. runs the waterfall on the fills: fee or takeover surplus, the insurance fund, ADL
   (``adl_policy``), socialisation, the exchange.

The waterfall's stages, in order, per mode (``docs/liquidation.md`` draws the table):

| stage | partial | binance | dydx_v4 | hyperliquid | bitmex |
|---|---|---|---|---|---|
| own margin, liquidators, book | 25%/tick | IOC, whole | 10%/block | 20%, whole; limit | - |
| vault (if any) | - | [0, 2/3 MM) | [0, 2/3 MM) | [0, 2/3 MM) | [0, 2/3 MM) |
| fund takeover | - | deficient | - | < 2/3 MM | all |
| fund pays | what it can | what it can | all or refuse | what it can | what it can |
| ADL | uncovered | uncovered | refused, TNC < 0 | uncovered | uncovered |
| socialise, exchange | rest | rest | rest | rest | rest |

A **takeover** closes the account at its bankruptcy price (it ends at zero equity: its whole
remaining margin is lost) and the fund closes the position into the book in the same sub-step,
keeping the whole surplus over bankruptcy or paying the loss: the fund holds no positions
between sub-steps. The backstop vault (:mod:`fundgym.envs.core.vault`), when the exchange has
one, comes first: it takes accounts with equity in [0, 2/3) of their requirement over at the
oracle, with their margin, and holds the positions; what it does not take (an exhausted vault,
an account below zero) goes on to the fund's takeover. ``RiskParams.waterfall`` can reorder or
drop the later stages (:data:`fundgym.envs.core.params.WATERFALL_STAGES`).

Sources of every constant are next to it; ``[E]`` marks an estimate.
"""

from __future__ import annotations

import math

from fundgym.envs.core.params import LIQUIDATION_MODES
from fundgym.envs.jit import jit

LIQ_PARTIAL = LIQUIDATION_MODES.index("partial")
LIQ_BINANCE = LIQUIDATION_MODES.index("binance")
LIQ_DYDX_V4 = LIQUIDATION_MODES.index("dydx_v4")
LIQ_HYPERLIQUID = LIQUIDATION_MODES.index("hyperliquid")
LIQ_BITMEX = LIQUIDATION_MODES.index("bitmex")

__all__ = [
    "DYDX_BANKRUPTCY_ADJUSTMENT",
    "DYDX_BLOCK_SECONDS",
    "DYDX_MAX_INSURANCE_LOST_USD",
    "DYDX_MAX_NOTIONAL_LIQUIDATED_USD",
    "DYDX_MAX_POSITION_PORTION",
    "DYDX_MIN_POSITION_NOTIONAL_USD",
    "DYDX_SPREAD_TO_MMR",
    "HL_BACKSTOP_FRACTION_OF_MM",
    "HL_CHECK_SECONDS",
    "HL_COOLDOWN_SECONDS",
    "HL_LIQUIDATOR_LOSS_FRAC",
    "HL_SLICE_FRACTION",
    "HL_SLICE_THRESHOLD_USD",
    "LIQ_BINANCE",
    "LIQ_BITMEX",
    "LIQ_DYDX_V4",
    "LIQ_HYPERLIQUID",
    "LIQ_PARTIAL",
    "dydx_close_base",
    "dydx_fillable_price",
    "hl_cooldown_substeps",
    "n_substeps",
    "path_price",
]

# ==== dYdX v4 ====
# Mainnet ``clob.liquidations_config`` (dydxopsdao/networks, dydx-mainnet-1/genesis.json,
# lines 951-963, commit fd7ee6e; quote quantums are micro-USDC), and the keeper that reads it
# (dydxprotocol/v4-chain protocol/x/clob/keeper/liquidations.go).

#: One block. dYdX v4 mainnet produces a block about every second [E]; a one-minute tick holds 60.
DYDX_BLOCK_SECONDS = 1.0
#: ``position_block_limits.max_position_portion_liquidated_ppm`` = 100,000: 10% of a position
#: per block.
DYDX_MAX_POSITION_PORTION = 0.10
#: ``position_block_limits.min_position_notional_liquidated`` = 1e9 quantums: at least $1,000
#: per order (a smaller position closes whole).
DYDX_MIN_POSITION_NOTIONAL_USD = 1_000.0
#: ``subaccount_block_limits.max_notional_liquidated`` = 1e11 quantums: at most $100,000 of a
#: subaccount's notional (at the oracle) liquidated per block.
DYDX_MAX_NOTIONAL_LIQUIDATED_USD = 100_000.0
#: ``subaccount_block_limits.max_quantums_insurance_lost`` = 1e12 quantums: the fund pays at most
#: $1,000,000 for one subaccount per block; a fill that would cost it more is rejected.
DYDX_MAX_INSURANCE_LOST_USD = 1_000_000.0
#: ``fillable_price_config.bankruptcy_adjustment_ppm`` = 1,000,000 (BA = 1).
DYDX_BANKRUPTCY_ADJUSTMENT = 1.0
#: ``fillable_price_config.spread_to_maintenance_margin_ratio_ppm`` = 1,500,000 (SMMR = 1.5).
DYDX_SPREAD_TO_MMR = 1.5

# ==== Hyperliquid ====
# hyperliquid.gitbook.io/hyperliquid-docs/trading/liquidations (market orders, backstop below
# 2/3 of maintenance margin) and the partial-liquidation announcement, mirrored in the HIP-3
# docs (docs.tings.xyz/core-mechanics/liquidations): "For liquidatable positions larger than
# 100k USDC, only 20% of the position will be sent as a market liquidation order to the book.
# After a block where any position of a user is partially liquidated, there is a cooldown
# period of 30 seconds. During this cooldown period, all market liquidation orders for that
# user will be for the entire position."

#: The engine's check interval. Hyperliquid checks every block (well under a second) against an
#: oracle it updates about every 3 s; one check a second on the intra-tick path is our grid [E]:
#: the path moves 1/60 of the minute's log move a check, far less than a maintenance margin.
HL_CHECK_SECONDS = 1.0
#: Positions above this notional (at the oracle) send a 20% slice first.
HL_SLICE_THRESHOLD_USD = 100_000.0
#: The slice.
HL_SLICE_FRACTION = 0.20
#: After a slice, every market liquidation order of the account is for the whole position for
#: this long. Tracked within the tick only and cut at its end: no per-account clock crosses
#: ticks, so a slice in a tick's last 30 s leaves the next tick free to slice again [E].
HL_COOLDOWN_SECONDS = 30.0
#: Below this fraction of the maintenance requirement the backstop takes the account over.
#: Above it, a market liquidation order fills no worse than the account's bankruptcy price
#: and otherwise waits [E]: the docs send "market orders to the book" and take the account
#: over "without successful liquidation through the book" once below 2/3 MM, so a fill that
#: left the account negative would bypass the backstop built to catch it. On 10 Oct 2025, 302
#: of 63,637 liquidations ended below zero equity: the gaps past both bands, not the book.
HL_BACKSTOP_FRACTION_OF_MM = 2.0 / 3.0
#: Hyperliquid's Liquidator vault: its loss, as a share of its capital, beyond which its own
#: inventory is deleveraged (:mod:`fundgym.envs.core.vault`, "Loss limit"). Hyperliquid set
#: such a threshold after the JELLY squeeze of March 2025 without publishing it; 2% [E] lies
#: under the JELLY squeeze's unrealised loss that prompted it ($10.6-13.5M on a $230M vault,
#: 4.6-5.9% [S89, S90]) and near the $4M ETH loss (1.7%) HLP had absorbed two weeks before
#: [S91]. The simulators' ``vault_adl_loss_frac`` overrides it.
HL_LIQUIDATOR_LOSS_FRAC = 0.02


@jit(error_model="numpy", inline="always")
def n_substeps(mode, tick_seconds):  # type: ignore[no-untyped-def]
    """Sub-steps of one tick under ``mode``: a block or check a second, or the whole tick.

    ``binance`` and ``bitmex`` take whole positions over at once and need no finer clock.
    """
    if mode == LIQ_DYDX_V4:
        return max(1, math.floor(tick_seconds / DYDX_BLOCK_SECONDS + 0.5))
    if mode == LIQ_HYPERLIQUID:
        return max(1, math.floor(tick_seconds / HL_CHECK_SECONDS + 0.5))
    return 1


@jit(error_model="numpy", inline="always")
def path_price(start, end, step, n_steps):  # type: ignore[no-untyped-def]
    """The price sub-step ``step`` (0-based) of ``n_steps`` reads on the tick's intra-tick path.

    Linear in log price from the previous tick's value ``start`` to this tick's ``end``:
    sub-step ``j`` of ``J`` reads ``start x (end / start) ** ((j + 1) / J)``, one sub-step past
    the previous tick's last reading, and the last sub-step reads ``end`` itself (exactly), so a
    mode of one sub-step sees only the tick's price. A ``start`` that is not > 0 means no
    previous tick (an episode's first): every sub-step reads ``end``. Deterministic: no draw.
    """
    if step + 1 >= n_steps or not start > 0.0:
        return end
    return start * math.exp((step + 1) / n_steps * math.log(end / start))


@jit(error_model="numpy", inline="always")
def hl_cooldown_substeps():  # type: ignore[no-untyped-def]
    """Hyperliquid's 30 s cooldown in checks."""
    return math.floor(HL_COOLDOWN_SECONDS / HL_CHECK_SECONDS + 0.5)


@jit(error_model="numpy", inline="always")
def dydx_close_base(abs_q, m):  # type: ignore[no-untyped-def]
    """Base units of one dYdX block's liquidation order for a position of ``abs_q`` at ``m``.

    ``min(position, max(10% of it, $1,000), $100,000)`` in notional at the oracle
    (``GetMaxAndMinPositionNotionalLiquidatable`` with the subaccount's block limit; one market,
    so the subaccount's limit is the position's). Dust whose share underflows closes whole.
    """
    close = min(
        abs_q,
        max(DYDX_MAX_POSITION_PORTION * abs_q, DYDX_MIN_POSITION_NOTIONAL_USD / m),
        DYDX_MAX_NOTIONAL_LIQUIDATED_USD / m,
    )
    return close if close > 0.0 else abs_q


@jit(error_model="numpy", inline="always")
def dydx_fillable_price(q, m, equity, requirement, adjustment, spread_to_mmr, position_requirement):  # type: ignore[no-untyped-def]
    """dYdX's fillable price: the worst price a liquidation order of position ``q`` may fill at.

    ``GetFillablePrice``: the subaccount's adjusted bankruptcy rating ``ABR = clamp(BA x (1 -
    TNC / TMMR), 0, 1)`` (``equity`` TNC and ``requirement`` TMMR are the whole account's) and
    ``FP = (PNNV - ABR x SMMR x PMMR) / PS``, with ``PNNV = q x m``, ``PMMR`` the position's own
    requirement (``position_requirement``; ``requirement`` itself for a one-market account) and
    ``PS = q``: a long sells at no less than ``m - ABR x SMMR x PMMR / q``, a short buys at no
    more. A healthier account (``TNC`` nearer ``TMMR``) gets a limit nearer the oracle.
    """
    abr = min(max(adjustment * (1.0 - equity / requirement), 0.0), 1.0)
    return (q * m - abr * spread_to_mmr * position_requirement) / q
