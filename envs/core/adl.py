"""Auto-deleveraging rules: which opposite positions close, how much of each, and at what price.

:func:`fundgym.envs.core.kernels._deleverage` works per bankrupt side. It sums the base units the
insurance fund could not cover (``amount``), picks the price the offset trades at, and lists the
eligible counterparties: accounts not being liquidated, on the opposite side, that stay at or
above zero equity when closed whole at that price (dYdX's collateral check). The rule chosen by
``RiskParams.adl_policy`` (code = index in :data:`fundgym.envs.core.params.ADL_POLICIES`) then
decides how much each counterparty closes:

| code | rule | who closes how much | price |
|---|---|---|---|
| 0 | ``bitmex`` | greedy from the top BitMEX rank (PnL% x effective leverage) | bankruptcy |
| 1 | ``hyperliquid`` | greedy from the top Hyperliquid index (price ratio x leverage) | mark |
| 2 | ``drift`` | every eligible position, pro rata to its base size | bankruptcy |
| 3 | ``water_filling`` | most levered first until leverages are equal, then all | bankruptcy |
| 4 | ``risk_pro_rata`` | every eligible position, a fraction ~ its leverage | bankruptcy |

("bankruptcy": the bankrupt side's size-weighted bankruptcy price, one per side and tick.)

With several markets, :func:`fundgym.envs.core.kernels._deleverage_market` does the same per
market and side through :func:`close_market_counterparties`: only that market's opposite
positions close, and each counterparty is judged, ranked and sized on its whole cross
account's equity.

Under every rule the counterparties close ``amount`` in total (up to rounding, never more), no
counterparty closes more than it holds (sizes move toward zero and never flip), and each pays
or receives its share of the offset's cash (``closed / amount x quote``), so the bankrupt side's
cash and the counterparties' match and money is conserved. Eligibility (solvent when closed
whole) bounds every partial close too, so no counterparty ends below zero equity.

Leverage, where a rule uses it, is ``|size| x mark / equity`` with equity at the mark;
an eligible counterparty with zero equity has infinite leverage and is closed first, whole.

**Overshoot** (event ``adl_overshoot_usd``): base units deleveraged beyond the fewest that,
moved from the book's fill to the rule's price, would have closed the shortfall the fund left
(``bad - paid`` of each liquidation order), valued at the rule's price. Under the four rules
that trade at the bankruptcy price it is zero by construction: each deleveraged unit recovers
exactly its own shortfall, so the engine deleverages exactly the uncovered base, and the rules
differ only in who gives it up. Under ``hyperliquid`` (mark price) a unit recovers
``side x (mark - fill)`` instead of ``side x (bankruptcy - fill)``: when the mark is better than
the bankrupt account's bankruptcy price, the whole uncovered base is still deleveraged, more than
the shortfall needed, and the bankrupt account keeps the surplus; the excess base, at the mark,
is the overshoot. When the mark is worse, the close leaves a deficit that continues down the
waterfall (socialisation, then the exchange) and there is no overshoot.
"""

from __future__ import annotations

import numpy as np

from fundgym.envs.core.params import ADL_POLICIES
from fundgym.envs.jit import jit

ADL_BITMEX = ADL_POLICIES.index("bitmex")
ADL_HYPERLIQUID = ADL_POLICIES.index("hyperliquid")
ADL_DRIFT = ADL_POLICIES.index("drift")
ADL_WATER_FILLING = ADL_POLICIES.index("water_filling")
ADL_RISK_PRO_RATA = ADL_POLICIES.index("risk_pro_rata")

__all__ = [
    "ADL_BITMEX",
    "ADL_DRIFT",
    "ADL_HYPERLIQUID",
    "ADL_RISK_PRO_RATA",
    "ADL_WATER_FILLING",
    "close_counterparties",
    "close_market_counterparties",
]


# ==== ranking scores (queue rules) ====


@jit(error_model="numpy", inline="always")
def bitmex_score(c, q, e, m):  # type: ignore[no-untyped-def]
    """BitMEX ranking score (formulas.adl_score); ``-inf`` when not a candidate.

    Source: https://www.bitmex.com/app/autoDeleveraging: ``PnL% x EffLev`` when ``PnL% > 0``,
    ``PnL% / EffLev`` otherwise, ``EffLev = |mark value| / (mark value - bankrupt value)``,
    which for a linear contract is ``|q| m / equity``.
    """
    eq = c + q * (m - e)
    if q == 0.0 or not eq > 0.0:
        return -np.inf
    pnl_frac = q * (m - e) / abs(q * e)
    eff_lev = abs(q) * m / eq
    if pnl_frac > 0.0:
        return pnl_frac * eff_lev
    return pnl_frac / eff_lev


@jit(error_model="numpy", inline="always")
def hyperliquid_score(c, q, e, m):  # type: ignore[no-untyped-def]
    """Hyperliquid's ADL sorting index; ``-inf`` when not a candidate.

    Source: https://hyperliquid.gitbook.io/hyperliquid-docs/trading/auto-deleveraging: the
    opposite side is "ranked by unrealized pnl and leverage used", with the index
    ``(mark_price / entry_price) x (notional_position / account_value)``. The page gives the
    long's form; for a short, whose profit grows as the mark falls, the price ratio is inverted
    (``entry / mark``), an interpretation: the index must rank a profitable short above a losing
    one. Accounts with no position or equity ``<= 0`` rank last, as under BitMEX.
    """
    eq = c + q * (m - e)
    if q == 0.0 or not eq > 0.0:
        return -np.inf
    ratio = m / e if q > 0.0 else e / m
    return ratio * (abs(q) * m / eq)


@jit(error_model="numpy", inline="always")
def _base_collateral(coll, other, i, a):  # type: ignore[no-untyped-def]
    """Account ``a``'s collateral plus its PnL in the other markets (``other`` empty: none)."""
    if other.shape[0] == 0:
        return coll[i, a]
    return coll[i, a] + other[a]


# ==== the queue: greedy from the top score ====


@jit(error_model="numpy", inline="always")
def _ranks_before(key, who, x, y):  # type: ignore[no-untyped-def]
    """Whether candidate ``x`` comes before ``y``: higher score, then lower account index."""
    return key[x] > key[y] or (key[x] == key[y] and who[x] < who[y])


@jit(error_model="numpy")
def _sift_down(heap, size, start, key, who):  # type: ignore[no-untyped-def]
    """Restore the heap property below ``start`` (a max-heap in ranking order)."""
    root = start
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and _ranks_before(key, who, heap[child + 1], heap[child]):
            child += 1
        if not _ranks_before(key, who, heap[child], heap[root]):
            return
        heap[root], heap[child] = heap[child], heap[root]
        root = child


@jit(error_model="numpy")
def _close_queue(i, j, coll, other, size, entry, m, cand, amount, quote, bankrupt_side, policy):  # type: ignore[no-untyped-def]
    """Close ``amount`` base units of market ``j`` against ``cand`` greedily from the top score.

    The score is BitMEX's or Hyperliquid's (``policy``). The candidates form a heap keyed on
    (score, lower index first), and only as many are popped as the amount needs: a stable sort
    of every candidate would cost ``K log K`` per side and tick where a few pops usually
    suffice. Each counterparty closes ``min(amount - closed so far, |size|)`` and trades its
    share of the batch as ``share x quote``, so that no price is formed from a dust size.
    """
    n_cand = cand.shape[0]
    key = np.empty(n_cand)
    heap = np.empty(n_cand, np.int64)
    for r in range(n_cand):
        a = cand[r]
        c = _base_collateral(coll, other, i, a)
        if policy == ADL_HYPERLIQUID:
            score = hyperliquid_score(c, size[i, a, j], entry[i, a, j], m)
        else:
            score = bitmex_score(c, size[i, a, j], entry[i, a, j], m)
        key[r] = score if score == score else -np.inf  # NaN (a subnormal size) ranks last
        heap[r] = r
    for start in range(n_cand // 2 - 1, -1, -1):
        _sift_down(heap, n_cand, start, key, cand)
    left = n_cand
    before = 0.0
    while left > 0 and before < amount:
        top = heap[0]
        left -= 1
        heap[0] = heap[left]
        _sift_down(heap, left, np.int64(0), key, cand)  # int64 as above: one compile
        a = cand[top]
        q = size[i, a, j]
        closed = min(max(amount - before, 0.0), abs(q))
        before += abs(q)
        cash = (closed / amount) * quote
        coll[i, a] = coll[i, a] - bankrupt_side * (cash - closed * entry[i, a, j])
        size[i, a, j] = q + closed * bankrupt_side


# ==== allocation rules: how much of each eligible position ====


@jit(error_model="numpy")
def _positions(i, j, coll, other, size, entry, m, cand):  # type: ignore[no-untyped-def]
    """Each candidate's ``|size|`` in market ``j``, its equity at mark and its leverage.

    Leverage is ``inf`` at zero equity; with ``other`` the equity is the whole cross account's.
    """
    n = cand.shape[0]
    cap = np.empty(n)
    eq = np.empty(n)
    lev = np.empty(n)
    for r in range(n):
        a = cand[r]
        q = size[i, a, j]
        cap[r] = abs(q)
        eq[r] = _base_collateral(coll, other, i, a) + q * (m - entry[i, a, j])
        lev[r] = cap[r] * m / eq[r] if eq[r] > 0.0 else np.inf
    return cap, eq, lev


@jit(error_model="numpy")
def _infinite_first(cap, lev, order, amount, closed):  # type: ignore[no-untyped-def]
    """Close the zero-equity candidates (leading ``order``) whole, in order; return (next, left).

    Their leverage is infinite: no partial close lowers it (equity stays zero at the
    bankruptcy price), so both leverage rules take them first, to the extent needed.
    """
    k = 0
    left = amount
    n = order.shape[0]
    while k < n and lev[order[k]] == np.inf and left > 0.0:
        j = order[k]
        x = min(cap[j], left)
        closed[j] = x
        left -= x
        k += 1
    return k, left


@jit(error_model="numpy")
def _pro_rata_by_size(cap, amount, closed):  # type: ignore[no-untyped-def]
    """Drift: each eligible position closes ``amount x |size| / sum |size|``.

    Source: Drift v2 ``controller/liquidation.rs: resolve_perp_bankruptcy`` socialises what
    its insurance fund cannot pay through the cumulative funding index,
    ``delta = loss / (|OI long| + |OI short|)``, so every position bears it pro rata to base
    size (reference notes, section 2). Here that sharing key is applied to the offsetting
    close itself: each eligible opposite position gives up the same fraction of its size, at
    the batch bankruptcy price.
    """
    total = 0.0
    for j in range(cap.shape[0]):
        total += cap[j]
    for j in range(cap.shape[0]):
        closed[j] = min(cap[j], amount * (cap[j] / total))


@jit(error_model="numpy")
def _water_filling(cap, eq, lev, haircut, m, amount, closed):  # type: ignore[no-untyped-def]
    """Campbell, Hey, Moallemi and Nutz (2026): drain leverage from the top down.

    Source: "Risk-Based Auto-Deleveraging", arXiv:2603.15963 (16 Mar 2026): in a single-asset
    setting the risk-neutral optimal ADL policy minimises the maximum leverage among
    participants; positions are reduced first for the most levered accounts and leverage is
    progressively equalised ("water-filling" or "leverage-draining").

    Closing ``x`` units at the batch price costs a counterparty ``x x haircut`` of equity
    (``haircut = side x (batch price - mark)`` per unit, negative when the close gains), so its
    leverage after is ``L(x) = (|q| - x) m / (E - x haircut)``. Bringing every account above a
    level ``L`` down to it closes ``x = (|q| m - L E) / (m - L haircut)``; the total is
    decreasing in ``L``. With ``S_q`` and ``S_E`` the sizes and equities of the accounts above
    the level, the level that closes ``amount`` is ``L = m (S_q - amount) / (S_E - amount x
    haircut)``: the accounts are taken in descending leverage until the next one's leverage is
    below it. Every account above the level ends exactly at it; the level falls toward zero
    (everyone closed) as ``amount`` reaches the eligible capacity.
    """
    order = np.argsort(-lev, kind="mergesort")  # descending; ties: lower index first
    start, left = _infinite_first(cap, lev, order, amount, closed)
    n = order.shape[0]
    if not left > 0.0 or start == n:
        return
    s_q = 0.0
    s_e = 0.0
    k = start
    while True:
        j = order[k]
        s_q += cap[j]
        s_e += eq[j]
        if k + 1 == n:
            break
        nxt = lev[order[k + 1]]
        # Capacity down to the next account's leverage, without dividing by m - nxt x haircut
        # (>= 0 for eligible accounts, zero for one that closing whole leaves at zero equity).
        if m * s_q - nxt * s_e >= left * (m - nxt * haircut):
            break
        k += 1
    level = 0.0
    if left < s_q:
        den = s_e - left * haircut
        level = max(m * (s_q - left) / den, 0.0) if den > 0.0 else 0.0
    den = m - level * haircut
    for t in range(start, k + 1):
        j = order[t]
        x = (cap[j] * m - level * eq[j]) / den if den > 0.0 else cap[j]
        closed[j] = min(max(x, 0.0), cap[j])


@jit(error_model="numpy")
def _risk_pro_rata(cap, lev, amount, closed):  # type: ignore[no-untyped-def]
    """Chitra (2025/26), risk-aware pro rata, as interpreted here: fraction closed ~ leverage.

    Source: T. Chitra, "Autodeleveraging: Impossibilities and Optimization", arXiv:2512.01112
    (v1 30 Nov 2025, v3 16 Feb 2026), which proposes pro-rata ADL weighted by each winner's
    risk rather than a queue. **Interpretation** (the weight is ours): reductions are pro rata
    to ``notional x leverage``, i.e. each eligible position closes the fraction
    ``min(1, lambda x leverage)`` of its size, with ``lambda`` set so the total is ``amount``
    (positions whose fraction would pass 1 close whole and the rest share what remains). Why
    this weight: leverage is what the exchange's risk of a future shortfall from an account
    grows with (Campbell et al. 2026), so the thinnest-capitalised positions shed the most;
    the notional factor keeps it pro rata (a fraction of each position, as Drift's), so the
    fraction depends on leverage alone and splitting an account in two changes nothing. A
    PnL-weighted key was not chosen: at the bankruptcy price every counterparty gives up the
    same haircut per unit, so profit would weigh who is closed without measuring the risk left.
    """
    n = cap.shape[0]
    order = np.argsort(-lev, kind="mergesort")
    start, left = _infinite_first(cap, lev, order, amount, closed)
    if not left > 0.0 or start == n:
        return
    tail = np.zeros(n + 1)  # tail[t]: sum of |size| x leverage over order[t:]
    for t in range(n - 1, start - 1, -1):
        j = order[t]
        tail[t] = tail[t + 1] + cap[j] * lev[j]
    saturated = 0.0
    lam = 0.0
    k = start
    while k < n:
        lam = (left - saturated) / tail[k]
        if lam * lev[order[k]] <= 1.0:
            break
        saturated += cap[order[k]]  # its fraction would pass 1: it closes whole
        k += 1
    for t in range(start, n):
        j = order[t]
        closed[j] = cap[j] if t < k else min(cap[j] * (lam * lev[j]), cap[j])


@jit(error_model="numpy")
def _settle(i, coll, size, entry, cand, closed, amount, quote, bankrupt_side):  # type: ignore[no-untyped-def]
    """:func:`_settle_market` in market 0 (a one-market exchange)."""
    _settle_market(i, 0, coll, size, entry, cand, closed, amount, quote, bankrupt_side)


@jit(error_model="numpy")
def _settle_market(i, j, coll, size, entry, cand, closed, amount, quote, bankrupt_side):  # type: ignore[no-untyped-def]
    """Apply an allocation in market ``j``: candidate ``r`` closes ``closed[r]``, in all ``amount``.

    An allocation's closed forms round, so its sum can miss ``amount`` by a few ulps: the
    excess is trimmed in candidate order, and what rounding left unplaced goes, in the same
    order, to candidates with size left, so the counterparties' base matches the bankrupt
    side's (no candidate beyond its size). Each pays or receives ``closed / amount x quote``
    (the batch's cash at its price) and realises the difference to its entry; sizes move
    toward zero.
    """
    n = cand.shape[0]
    before = 0.0
    for r in range(n):
        closed[r] = min(closed[r], max(amount - before, 0.0))
        before += closed[r]
    r = 0
    while before < amount and r < n:
        # Clamp the sum, not the addend: closed + (|size| - closed) can round past |size|.
        grown = min(closed[r] + (amount - before), abs(size[i, cand[r], j]))
        before += grown - closed[r]
        closed[r] = grown
        r += 1
    for r in range(n):
        x = closed[r]
        if not x > 0.0:
            continue
        a = cand[r]
        cash = (x / amount) * quote
        coll[i, a] = coll[i, a] - bankrupt_side * (cash - x * entry[i, a, j])
        size[i, a, j] = size[i, a, j] + x * bankrupt_side


# ==== the entry point ====


@jit(error_model="numpy")
def close_counterparties(  # type: ignore[no-untyped-def]
    i, coll, size, entry, m, cand, amount, quote, batch_price, bankrupt_side, policy
):
    """Close ``amount`` base units of exchange ``i``'s eligible counterparties ``cand``.

    Args:
        i: The exchange.
        coll: ``(E, A)`` collateral, updated in place.
        size: ``(E, A, M)`` positions, updated in place (market 0).
        entry: ``(E, A, M)`` entry prices (read).
        m: The mark the margin engine reads.
        cand: Eligible counterparties, in account order (``int64``).
        amount: Base units to offset, ``> 0`` and at most the candidates' total ``|size|``.
        quote: USD that changes hands for ``amount`` (``amount x`` the offset's price).
        batch_price: The offset's price per unit (the batch bankruptcy price, or the mark).
        bankrupt_side: ``+1.0`` when the bankrupt accounts are long, ``-1.0`` when short.
        policy: Rule code (``ADL_*``).
    """
    close_market_counterparties(
        i, 0, coll, np.empty(0), size, entry, m, cand, amount, quote, batch_price,
        bankrupt_side, policy,
    )  # fmt: skip


@jit(error_model="numpy")
def close_market_counterparties(  # type: ignore[no-untyped-def]
    i, j, coll, other, size, entry, m, cand, amount, quote, batch_price, bankrupt_side, policy
):
    """:func:`close_counterparties` in market ``j`` of a cross-margined exchange.

    The rules rank and size each counterparty on its whole cross account: its equity is
    ``coll + other + size x (m - entry)`` in market ``j``, where ``other[a]`` is account
    ``a``'s unrealised PnL in every other market (``(A,)``; an empty array: one market, the
    equity is ``coll + size x (m - entry)``, operation for operation). Only market ``j``'s
    positions close; the cash changes each account's one collateral balance.
    """
    if policy in (ADL_BITMEX, ADL_HYPERLIQUID):
        _close_queue(i, j, coll, other, size, entry, m, cand, amount, quote, bankrupt_side, policy)
        return
    cap, eq, lev = _positions(i, j, coll, other, size, entry, m, cand)
    closed = np.zeros(cand.shape[0])
    if policy == ADL_DRIFT:
        _pro_rata_by_size(cap, amount, closed)
    elif policy == ADL_WATER_FILLING:
        haircut = bankrupt_side * (batch_price - m)
        _water_filling(cap, eq, lev, haircut, m, amount, closed)
    else:
        _risk_pro_rata(cap, lev, amount, closed)
    _settle_market(i, j, coll, size, entry, cand, closed, amount, quote, bankrupt_side)
