"""Outside liquidators with incentives: how much liquidation flow they absorb, and at what price.

Venues with outside liquidators (Drift's keepers, dYdX v3's, the lending markets') pay them a
share of the liquidation fee to take the liquidated position at the oracle and carry the risk
of closing it. Without them the engine's orders walk the book. fundgym models a competitive
population of them (:func:`liquidator_capacity_usd`):

**The model.** A liquidator that takes ``x`` USD of a long at the oracle ``m`` hedges it by
selling into the book. Through fundgym's linear book (``D`` USD per 1% of price, average
slippage ``0.005 x / D``: :class:`fundgym.envs.core.impact.LinearImpact`) the hedge's
marginal slippage is ``0.01 x / D``; on top, when the book trades below the oracle (a stale or
lagging oracle in a crash), the hedge loses the gap ``g = max((m - book) / m, 0)``. It earns
its share of the fee, ``f_L = liquidation_fee_rate x (1 - liquidation_fee_fund_share)``, of
each dollar it takes. Competitive liquidators take flow until the marginal dollar earns
nothing:

    ``capacity = k x 100 x D x max(f_L - g, 0)``  USD per tick per side,

with ``k = liquidator_capacity_mult`` (a lever of :mod:`fundgym.envs.levers`, default 1: the
competitive market; 0: a venue that admits no outside liquidators, as the venue presets, whose
engines or vaults close positions themselves; a user's own estimate of how much capital the
liquidators bring scales it).

So capacity is **linear in the liquidators' net incentive** (elasticity 1 with respect to
``f_L - g``; with respect to the fee share ``s_L``, ``d ln C / d ln s_L = f_L / (f_L - g) >= 1``:
exactly 1 while the oracle is live) and **linear in depth** (it falls as the book thins, and
vanishes when the oracle lags the book by more than their fee). The elasticity is derived, not
fitted [E]: competition driving liquidators to zero marginal profit is the finding of Qin,
Zhou, Gamito, Jovanovic and Gervais, "An Empirical Study of DeFi Liquidations" (IMC 2021), and
Perez, Werner, Xu and Livshits (FC 2021) on Compound; neither measures capacity against depth,
so the linear book stands in for the liquidators' hedging venue. Calibration: at dYdX's fee
(1.5%) split half and half, a book of ``D`` per 1% lets liquidators take ``0.75 D`` a minute:
a flow the book would fill at 0.375% average slippage; at the default split (all of the fee to
the fund, as dYdX v4, whose engine matches liquidation orders against the book itself) they
take nothing and the engine's orders walk the book, as before liquidators existed
(``docs/liquidation.md`` shows the fee split's price).

**Where they act.** In the waterfall's "liquidators and book" stage, before the vault, the
fund and ADL: each tick, per side, liquidators take the first ``capacity`` of the engine's
orders they are paid for (accounts solvent at the oracle, not taken over: a bankrupt
account's capped fee is zero), pro rata over those orders, at the oracle; the rest of the
flow walks the book on its own. Their share of the fee is already their reward
(``liquidator_rewards_usd``), and the liquidation fee is charged as before (capped by the
account's surplus over bankruptcy). The flow they take still moves the next tick's prices:
they hedge it into the same book. Under the sub-stepped venue modes the tick's capacity is
shared by its sub-steps, in order.
"""

from __future__ import annotations

from fundgym.envs.core.impact import book_price
from fundgym.envs.jit import jit

__all__ = [
    "LIQUIDATOR_MARGINAL_SLIPPAGE_PER_DEPTH",
    "liquidator_capacity_usd",
    "liquidators_paid",
    "side_fills",
]

#: The marginal slippage of hedging ``x`` USD through the linear book is this x ``x / D``
#: (twice :class:`~fundgym.envs.core.impact.LinearImpact`'s average, 0.005 per depth unit).
LIQUIDATOR_MARGINAL_SLIPPAGE_PER_DEPTH = 0.01


@jit(error_model="numpy", inline="always")
def liquidators_paid(fee_rate, fund_share, mult):  # type: ignore[no-untyped-def]
    """Whether outside liquidators exist and earn a share of the fee (else they take nothing)."""
    return mult * fee_rate * (1.0 - fund_share) > 0.0


@jit(error_model="numpy", inline="always")
def liquidator_capacity_usd(fee_rate, fund_share, mult, depth, m, book_px, sign):  # type: ignore[no-untyped-def]
    """USD the liquidators absorb in a tick on one side: ``k x 100 x D x max(f_L - gap, 0)``.

    ``sign`` is +1 for the sells (liquidated longs: liquidators buy at ``m`` and hedge by
    selling at ``book_px``), -1 for the buys. ``depth`` is USD per 1% of price; ``mult`` is
    ``k``.
    """
    incentive = fee_rate * (1.0 - fund_share)
    gap = max(sign * (m - book_px) / m, 0.0)
    net = incentive - gap
    if not net > 0.0:
        return 0.0
    return mult * net * depth / LIQUIDATOR_MARGINAL_SLIPPAGE_PER_DEPTH


@jit(error_model="numpy", inline="always")
def side_fills(flow, eligible_flow, capacity, m, book_px, depth, max_impact, sign):  # type: ignore[no-untyped-def]
    """One side's fills: ``(book fill, liquidators' orders' fill, USD they took)``.

    Of the side's ``flow`` USD, ``eligible_flow`` is the orders liquidators are paid for (an
    account solvent at the oracle, not a takeover: the fee on a bankrupt account's order, or
    on a takeover's, pays them nothing). They take ``min(eligible_flow, capacity)`` at the
    oracle ``m``, pro rata over those orders; the rest of the side's flow walks the book from
    ``book_px`` on its own. An eligible order fills at the average of the two; the others at
    the book's. ``sign`` is +1 for sells, -1 for buys. Without capacity both fills are
    :func:`~fundgym.envs.core.impact.book_price` of the whole flow.
    """
    taken = min(eligible_flow, capacity) if capacity > 0.0 and eligible_flow > 0.0 else 0.0
    book_fill = book_price(book_px, flow - taken, depth, max_impact, -sign)
    if not taken > 0.0:
        return book_fill, book_fill, 0.0
    share = taken / eligible_flow
    return book_fill, share * m + (1.0 - share) * book_fill, taken
