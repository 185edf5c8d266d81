"""Comparisons → order: one aggregation core for pairwise, setwise, listwise and JointRank rankers.

Pure numpy functions; no model code.  See :mod:`surerank.aggregate.core`.
"""

from surerank.aggregate.core import (
    AGGREGATORS,
    aggregate,
    borda,
    borda_from_wins,
    bradley_terry,
    kemeny,
    kemeny_brute_force,
    kemeny_cost,
    kemeny_exact,
    kemeny_local_search,
    kwiksort,
    order_from_scores,
    pagerank,
    rankings_to_wins,
    win_count,
    win_rate,
    wins_matrix,
)

__all__ = [
    "AGGREGATORS", "aggregate", "borda", "borda_from_wins", "bradley_terry", "kemeny", "kemeny_brute_force",
    "kemeny_cost", "kemeny_exact", "kemeny_local_search", "kwiksort", "order_from_scores", "pagerank",
    "rankings_to_wins", "win_count", "win_rate", "wins_matrix",
]
