"""Outside liquidators with incentives: how much liquidation flow they absorb, and at what price.

Venues with outside liquidators (Drift's keepers, dYdX v3's, the lending markets') pay them a
share of the liquidation fee to take the liquidated position at the oracle and carry the risk
of closing it. Without them the engine's orders walk the book. fundgym models a competitive
population of them (:func:`liquidator_capacity_usd`):

**The model.** A liquidator that takes ``x`` USD of a long at the oracle ``m`` hedges it by
selling into the book. Through fundgym's square-root book
(:class:`fundgym.envs.core.impact.SqrtImpact`, ``D`` USD per 1% of price) the hedge's
average slippage is two thirds of its walk's final move, ``(2/3) x 0.01 x sqrt(x / D)``, so
its cost is ``C(x) = x x (2/3) x 0.01 x sqrt(x / D) = (2/3) x 0.01 x x^(3/2) / sqrt(D)`` and
its marginal slippage is

    ``dC/dx = 0.01 x sqrt(x / D)``,

the walk's final move: the last dollar fills where the walk ends. On top, when the book
trades below the oracle (a stale or lagging oracle in a crash), the hedge loses the gap
``g = max((m - book) / m, 0)``. It earns its share of the fee,
``f_L = liquidation_fee_rate x (1 - liquidation_fee_fund_share)``, of each dollar it takes.
Competitive liquidators take flow until the marginal dollar earns nothing,
``0.01 x sqrt(x / D) = f_L - g``:

    ``capacity = k x D x (max(f_L - g, 0) / 0.01)^2``  USD per tick per side,

the notional whose walk moves the log price by ``f_L - g``
(:func:`~fundgym.envs.core.impact.walked_notional_one`), with
``k = liquidator_capacity_mult`` (a lever of :mod:`fundgym.envs.levers`, default 1: the
competitive market; 0: a venue that admits no outside liquidators, as the venue presets, whose
engines or vaults close positions themselves; a user's own estimate of how much capital the
liquidators bring scales it). The two-thirds average is the small-move form of the book's
fill, ``(2/3) x (1 - exp(-w))`` with ``w = 0.01 x sqrt(x / D)``; the marginal slippage of that
exact fill, ``(2/3)(1 - e^-w) + (w / 3) e^-w = w - (2/3) w^2 + ...``, would admit about
``(4/3) x (f_L - g)`` more flow (1% more at ``f_L - g = 0.75%``), well inside the [E] of the
model, and the closed form keeps the kernel free of a root search.

So capacity is **quadratic in the liquidators' net incentive** (elasticity 2 with respect to
``f_L - g``; with respect to the fee share ``s_L``, ``d ln C / d ln s_L = 2 f_L / (f_L - g)
>= 2``: exactly 2 while the oracle is live) and **linear in depth** (it falls as the book
thins, and vanishes when the oracle lags the book by more than their fee). The elasticities
are derived, not fitted [E]: competition driving liquidators to zero marginal profit is the
finding of Qin, Zhou, Gamito, Jovanovic and Gervais, "An Empirical Study of DeFi
Liquidations" (IMC 2021), and Perez, Werner, Xu and Livshits (FC 2021) on Compound; neither
measures capacity against depth, so fundgym's square-root book (``docs/impact.md``) stands in
for the liquidators' hedging venue. Calibration: at dYdX's fee (1.5%) split half and half,
``f_L = 0.75%`` and a book of ``D`` per 1% lets liquidators take ``0.75^2 D = 0.5625 D`` a
minute: a flow the book would fill at ``(2/3)(1 - e^-0.0075) = 0.498%`` average slippage; at
the default split (all of the fee to the fund, as dYdX v4, whose engine matches liquidation
orders against the book itself) they take nothing and the engine's orders walk the book, as
before liquidators existed (``docs/liquidation.md`` shows the fee split's price).

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

from fundgym.envs.core.impact import book_price, walked_notional_one
from fundgym.envs.jit import jit

__all__ = [
    "liquidator_capacity_usd",
    "liquidators_paid",
    "side_fills",
]


@jit(error_model="numpy", inline="always")
def liquidators_paid(fee_rate, fund_share, mult):  # type: ignore[no-untyped-def]
    """Whether outside liquidators exist and earn a share of the fee (else they take nothing)."""
    return mult * fee_rate * (1.0 - fund_share) > 0.0


@jit(error_model="numpy", inline="always")
def liquidator_capacity_usd(fee_rate, fund_share, mult, depth, m, book_px, sign):  # type: ignore[no-untyped-def]
    """USD the liquidators absorb in a tick on one side: ``k x D x (max(f_L - g, 0) / 0.01)^2``.

    The notional whose hedge's marginal slippage, the square-root walk's final move, equals
    their net incentive ``f_L - g``, ``g`` the oracle gap on the hedging side (module
    docstring). ``sign`` is +1 for the sells (liquidated longs: liquidators buy at ``m`` and
    hedge by selling at ``book_px``), -1 for the buys. ``depth`` is USD per 1% of price;
    ``mult`` is ``k``.
    """
    incentive = fee_rate * (1.0 - fund_share)
    gap = max(sign * (m - book_px) / m, 0.0)
    net = incentive - gap
    if not net > 0.0:
        return 0.0
    return mult * walked_notional_one(net, depth)


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
