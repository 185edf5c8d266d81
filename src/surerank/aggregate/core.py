"""Comparisons → one order: the aggregation core every comparison-based ranker shares.

Pure numpy, no model code.  The common currency is a *wins matrix* ``W`` (``n × n``, float): ``W[i, j]`` is
how much evidence says ``i`` beats ``j`` (a hard win adds 1, a tie adds 0.5 to both cells, a soft judgment
``p`` adds ``p`` to ``W[i, j]`` and ``1 - p`` to ``W[j, i]``).  Every aggregator returns a score vector
(higher is better) or an order (list of indices, best first); :func:`order_from_scores` breaks score ties by
input position so results are deterministic, and :func:`aggregate` first makes scores within
:data:`SCORE_TIE_TOLERANCE` of each other equal (:func:`snap_ties`: a solver's last-bit noise is not a preference).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

Comparison = tuple[int, int, float]
"""``(i, j, p)``: the probability (or hard 0/0.5/1 outcome) that item ``i`` beats item ``j``."""

EXACT_KEMENY_MAX_N = 12


def wins_matrix(n: int, comparisons: Iterable[Comparison]) -> np.ndarray:
    """Accumulate ``(i, j, p)`` judgments into a wins matrix; a tie is ``p = 0.5``."""
    w = np.zeros((n, n), dtype=float)
    for i, j, p in comparisons:
        if i == j:
            continue
        p = float(min(1.0, max(0.0, p)))
        w[i, j] += p
        w[j, i] += 1.0 - p
    return w


def rankings_to_wins(n: int, rankings: Iterable[Sequence[int]], weights: Iterable[float] | None = None
                     ) -> np.ndarray:
    """Every (possibly partial) ranking, best first, counts one win for each item over every item below it."""
    w = np.zeros((n, n), dtype=float)
    weight_iter = iter(weights) if weights is not None else itertools.repeat(1.0)
    for ranking, weight in zip(rankings, weight_iter):
        idx = np.asarray(list(ranking), dtype=int)
        if idx.size < 2:
            continue
        upper = np.triu(np.ones((idx.size, idx.size), dtype=float), k=1) * weight
        w[np.ix_(idx, idx)] += upper
    return w


#: scores of a fitted or summed aggregation that differ by less than this (relative, at least absolute) are
#: one tie: Bradley-Terry's Newton solve leaves tied items a few ulps apart, in a way that varies with the BLAS
#: and numpy build, and an order among ties must not depend on that
SCORE_TIE_TOLERANCE = 1e-9


def snap_ties(scores: Sequence[float] | np.ndarray, tol: float = SCORE_TIE_TOLERANCE) -> np.ndarray:
    """Scores with each one within ``tol`` (relative to its size, at least absolute) of the next higher score set
    equal to it, so :func:`order_from_scores` keeps the input order among them."""
    s = np.asarray(scores, dtype=float).copy()
    ranked = np.argsort(-s, kind="stable")
    for above, below in itertools.pairwise(ranked):
        if s[above] - s[below] <= tol * max(1.0, abs(s[above])):
            s[below] = s[above]
    return s


def order_from_scores(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Best first; equal scores keep the input order (stable), so ties never depend on hashing or luck."""
    s = np.asarray(scores, dtype=float)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def win_rate(w: np.ndarray) -> np.ndarray:
    """Share of games won (items never compared score 0.5): the simplest, the most robust to sparse data."""
    games = w + w.T
    played = games.sum(axis=1)
    wins = w.sum(axis=1)
    return np.where(played > 0, wins / np.maximum(played, 1e-12), 0.5)


def win_count(w: np.ndarray) -> np.ndarray:
    """Total wins (ties count half): the aggregation of PRP-allpairs and of JointRank's 'wins' variant."""
    return w.sum(axis=1)


def bradley_terry(w: np.ndarray, ties: np.ndarray | None = None, prior: float = 0.1,
                  max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    """Bradley-Terry strengths (log scale), with ties by Davidson's model; fitted by damped Newton steps.

    ``w[i, j]`` counts wins of ``i`` over ``j``; ``ties[i, j]`` (symmetric) counts ties.  Without ``ties``,
    ties already folded into ``w`` as half wins are fine too.  ``prior`` is a Gaussian prior on the log
    strengths (precision ``prior``) which keeps the maximum finite when one item wins every game.
    The log-likelihood is concave in (log strengths, log ν), so Newton's method with backtracking converges.
    """
    n = w.shape[0]
    w = np.asarray(w, dtype=float)
    t = np.zeros_like(w) if ties is None else np.asarray(ties, dtype=float)
    use_ties = bool(t.sum() > 0)
    # parameters: theta (n), and log nu when ties are modelled
    m = n + (1 if use_ties else 0)
    x = np.zeros(m)
    if use_ties:
        x[n] = math.log(0.5)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        theta = x[:n]
        lognu = x[n] if use_ties else -np.inf
        ti = theta[:, None]
        tj = theta[None, :]
        # terms of the denominator: exp(ti), exp(tj), nu*exp((ti+tj)/2)
        a = ti * np.ones_like(tj)
        b = tj * np.ones_like(ti)
        c = lognu + 0.5 * (ti + tj)
        mx = np.maximum(np.maximum(a, b), c)
        ea, eb, ec = np.exp(a - mx), np.exp(b - mx), np.exp(c - mx)
        z = ea + eb + ec
        log_den = mx + np.log(z)
        pa, pb, pc = ea / z, eb / z, ec / z
        # log-likelihood: sum_ij w_ij (ti - den_ij) + 1/2 sum_ij t_ij (lognu + (ti+tj)/2 - den_ij)
        mask = ~np.eye(n, dtype=bool)
        ll = float(np.sum(np.where(mask, w * (a - log_den), 0.0)))
        if use_ties:
            ll += 0.5 * float(np.sum(np.where(mask, t * (c - log_den), 0.0)))
        ll -= 0.5 * prior * float(theta @ theta)
        # games between i and j (each unordered pair counted from both sides)
        g = np.where(mask, w + w.T + t, 0.0)
        # d den_ij / d ti = pa + pc/2 ; for the pair in both orientations the expressions are symmetric
        dden_i = pa + 0.5 * pc
        grad_theta = w.sum(axis=1) + 0.5 * t.sum(axis=1) - np.sum(g * dden_i, axis=1) - prior * theta
        # Hessian of -sum g_ij/2 * den_ij over unordered pairs (g symmetric, counted twice → 1/2)
        # second derivatives of log-sum-exp: covariance of the "feature" vector under (pa, pb, pc)
        # feature for ti: [1, 0, 1/2], for tj: [0, 1, 1/2], for lognu: [0, 0, 1]
        e_i = pa + 0.5 * pc
        e_ii = pa + 0.25 * pc
        e_ij = 0.25 * pc
        e_j = pb + 0.5 * pc
        var_i = e_ii - e_i ** 2
        cov_ij = e_ij - e_i * e_j
        h = np.where(mask, -g * cov_ij, 0.0)
        np.fill_diagonal(h, 0.0)
        diag = -np.sum(np.where(mask, g * var_i, 0.0), axis=1) - prior
        hess = np.zeros((m, m))
        hess[:n, :n] = h
        hess[np.arange(n), np.arange(n)] = diag
        grad = np.zeros(m)
        grad[:n] = grad_theta
        if use_ties:
            # d/dlognu: ties count - sum g * pc ; over ordered pairs each unordered pair twice → 1/2
            grad[n] = 0.5 * float(np.sum(np.where(mask, t, 0.0))) - 0.5 * float(np.sum(g * pc))
            e_nu = pc
            var_nu = pc - pc ** 2
            cov_i_nu = 0.5 * pc - e_i * e_nu
            hess[n, n] = -0.5 * float(np.sum(g * var_nu))
            col = -np.sum(np.where(mask, g * cov_i_nu, 0.0), axis=1)
            hess[:n, n] = col
            hess[n, :n] = col
            hess[n, n] -= 1e-6
        return ll, grad, hess

    with _single_threaded_blas():
        x = _newton(objective, x, max_iter, tol)
    return x[:n] - x[:n].mean()


def _single_threaded_blas():
    """Small dense solves are 100x slower when a threaded BLAS oversubscribes busy cores; pin to one thread
    where threadpoolctl is installed (optional), else run as is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _newton(objective, x: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Damped Newton ascent with backtracking on a concave objective returning (value, gradient, Hessian)."""
    ll, grad, hess = objective(x)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(hess, -grad)
        except np.linalg.LinAlgError:
            step = grad * 0.1
        scale = 1.0
        while scale > 1e-6:
            cand = x + scale * step
            ll_new, grad_new, hess_new = objective(cand)
            if ll_new >= ll - 1e-12:
                break
            scale *= 0.5
        else:
            break
        x, improvement = cand, ll_new - ll
        ll, grad, hess = ll_new, grad_new, hess_new
        if abs(improvement) < tol and float(np.max(np.abs(grad))) < 1e-6:
            break
    return x


def pagerank(w: np.ndarray, damping: float = 0.85, max_iter: int = 200, tol: float = 1e-12) -> np.ndarray:
    """PageRank over the 'loser links to winner' graph: beating strong items counts more than beating weak ones.

    Edge weight ``loser → winner`` is the winner's share of their games (a tie splits it), so repeated
    comparisons of one pair do not outweigh a pair seen once.  Dangling items spread uniformly.
    """
    n = w.shape[0]
    games = w + w.T
    share = np.divide(w, games, out=np.zeros_like(w), where=games > 0)  # share[i, j]: i's share vs j
    # transition from loser j to winner i with weight share[i, j]
    out = share.T  # out[j, i] = share[i, j]
    row = out.sum(axis=1, keepdims=True)
    trans = np.divide(out, row, out=np.full_like(out, 1.0 / n), where=row > 0)
    r = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        new = (1 - damping) / n + damping * (r @ trans)
        if float(np.abs(new - r).sum()) < tol:
            r = new
            break
        r = new
    return r


def borda(n: int, rankings: Iterable[Sequence[int]]) -> np.ndarray:
    """Borda count over (possibly partial) rankings, best first: an item above ``k`` others scores ``k``.

    Scores are normalised by list length and averaged over the lists an item appears in, so items that
    appear in more (or longer) lists are not favoured; items never seen score 0.
    """
    total = np.zeros(n)
    seen = np.zeros(n)
    for ranking in rankings:
        ranking = list(ranking)
        m = len(ranking)
        if m == 0:
            continue
        for position, item in enumerate(ranking):
            total[item] += (m - 1 - position) / max(m - 1, 1)
            seen[item] += 1
    return np.where(seen > 0, total / np.maximum(seen, 1), 0.0)


def borda_from_wins(w: np.ndarray) -> np.ndarray:
    """Borda score from a wins matrix: wins minus losses (equivalent to pairwise Borda / Copeland-like sum)."""
    return w.sum(axis=1) - w.sum(axis=0)


def kemeny_cost(w: np.ndarray, order: Sequence[int]) -> float:
    """Total weight of judgments the order disagrees with: sum of ``w[j, i]`` for ``i`` placed above ``j``."""
    idx = np.asarray(list(order), dtype=int)
    sub = w[np.ix_(idx, idx)]
    return float(np.tril(sub, k=-1).sum())


def kwiksort(w: np.ndarray, seed: int = 0, pivot_rule: str = "random") -> list[int]:
    """KwikSort (Ailon et al.): quicksort with a pivot, placing each item by the majority of its games.

    A 3-approximation (in expectation) of Kemeny; with consistent comparisons it returns the true order.
    Uncompared (or tied) pairs go by Bradley-Terry strength, which propagates evidence transitively, so
    sparse but consistent comparison sets still give the true order.
    """
    rng = np.random.default_rng(seed)
    rate = bradley_terry(w)

    def before(i: int, j: int) -> bool:
        if w[i, j] != w[j, i]:
            return bool(w[i, j] > w[j, i])
        if rate[i] != rate[j]:
            return bool(rate[i] > rate[j])
        return i < j

    def sort(items: list[int]) -> list[int]:
        if len(items) <= 1:
            return items
        pivot = items[int(rng.integers(len(items)))] if pivot_rule == "random" else items[0]
        left = [x for x in items if x != pivot and before(x, pivot)]
        right = [x for x in items if x != pivot and not before(x, pivot)]
        return [*sort(left), pivot, *sort(right)]

    return sort(list(range(w.shape[0])))


def kemeny_exact(w: np.ndarray) -> list[int]:
    """An order of minimum Kemeny cost, by dynamic programming over subsets: O(2^n · n²), for n ≤ ~15.

    ``best[S]`` is the cheapest cost of placing the items of ``S`` at the top; the next item ``i`` placed
    below all of ``S`` pays ``w[i, j]`` for every ``j`` in ``S`` (each time ``i`` beat one placed above it).
    Ties go to the lexicographically smallest order, so the result is deterministic.
    """
    n = w.shape[0]
    if n == 0:
        return []
    if n > 20:
        raise ValueError(f"exact Kemeny is exponential; n={n} is over the limit of 20 (use kemeny())")
    full = (1 << n) - 1
    best = np.full(1 << n, np.inf)
    choice = np.full(1 << n, -1, dtype=int)
    best[0] = 0.0
    # cost_below[i][S] = sum_{j in S} w[i, j], built incrementally
    for s in range(1 << n):
        if not np.isfinite(best[s]):
            continue
        members = [j for j in range(n) if s >> j & 1]
        for i in range(n):
            if s >> i & 1:
                continue
            extra = float(w[i, members].sum()) if members else 0.0
            t = s | (1 << i)
            c = best[s] + extra
            if c < best[t] - 1e-12:
                best[t] = c
                choice[t] = i
    # walk back: choice[t] is the last item placed into t
    order_rev = []
    s = full
    while s:
        i = int(choice[s])
        order_rev.append(i)
        s &= ~(1 << i)
    return order_rev[::-1]


def kemeny_local_search(w: np.ndarray, init: Sequence[int] | None = None, max_passes: int = 50) -> list[int]:
    """Improve an order by single-item moves (remove, reinsert at the best position) until none helps.

    Starts from the Borda order when no ``init`` is given.  Each pass is O(n²); a local optimum for
    insertion moves is also one for adjacent swaps.
    """
    n = w.shape[0]
    order = list(init) if init is not None else order_from_scores(borda_from_wins(w))
    for _ in range(max_passes):
        improved = False
        for item in range(n):
            pos = order.index(item)
            rest = order[:pos] + order[pos + 1:]
            # cost of placing item at position k among rest: sum over rest above of w[item, r]
            # (item beat someone placed above) + sum over rest below of w[r, item]
            above = np.array([w[item, r] for r in rest])
            below = np.array([w[r, item] for r in rest])
            # placing at k: above = rest[:k], below = rest[k:]
            cum_above = np.concatenate([[0.0], np.cumsum(above)])
            cum_below = np.concatenate([np.cumsum(below[::-1])[::-1], [0.0]])
            costs = cum_above + cum_below
            k = int(np.argmin(costs))
            if costs[k] < costs[pos] - 1e-12:
                order = [*rest[:k], item, *rest[k:]]
                improved = True
        if not improved:
            break
    return order


def kemeny(w: np.ndarray, exact_max_n: int = EXACT_KEMENY_MAX_N) -> list[int]:
    """Kemeny order: exact for small ``n``, else the best local optimum from Borda and KwikSort starts."""
    n = w.shape[0]
    if n <= exact_max_n:
        return kemeny_exact(w)
    starts = [order_from_scores(borda_from_wins(w)), kwiksort(w, seed=0)]
    results = [kemeny_local_search(w, s) for s in starts]
    return min(results, key=lambda o: kemeny_cost(w, o))


def kemeny_brute_force(w: np.ndarray) -> tuple[float, list[int]]:
    """Minimum Kemeny cost by trying every permutation (reference for tests; n ≤ 8)."""
    n = w.shape[0]
    best_cost, best_order = math.inf, list(range(n))
    for perm in itertools.permutations(range(n)):
        c = kemeny_cost(w, perm)
        if c < best_cost - 1e-12:
            best_cost, best_order = c, list(perm)
    return best_cost, best_order


AGGREGATORS = ("wins", "win-rate", "bradley-terry", "pagerank", "borda", "kwiksort", "kemeny")


def aggregate(w: np.ndarray, method: str = "bradley-terry", seed: int = 0) -> tuple[list[int], np.ndarray]:
    """Order items from a wins matrix with the named method; returns (order best first, scores).

    For order-only methods (KwikSort, Kemeny) the scores are ``n - rank`` so score order equals the order.
    """
    n = w.shape[0]
    if method == "wins":
        scores = win_count(w)
    elif method == "win-rate":
        scores = win_rate(w)
    elif method == "bradley-terry":
        scores = bradley_terry(w)
    elif method == "pagerank":
        scores = pagerank(w)
    elif method == "borda":
        scores = borda_from_wins(w)
    elif method in ("kwiksort", "kemeny"):
        order = kwiksort(w, seed=seed) if method == "kwiksort" else kemeny(w)
        scores = np.zeros(n)
        for rank, i in enumerate(order):
            scores[i] = n - rank
        return order, scores
    else:
        raise ValueError(f"unknown aggregation method {method!r}; choose one of {', '.join(AGGREGATORS)}")
    scores = snap_ties(scores)
    return order_from_scores(scores), scores
