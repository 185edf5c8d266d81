"""A ranker's self-checks on judged data: order sensitivity, position bias, typos, lexical traps, depth.

These call rankers (``eval`` never does): :func:`run_robustness` runs the checks and returns a typed
:class:`RobustnessResult` (``{"kind": "surerank.robustness", "version": 1}`` as JSON), which ``surerank
robustness`` writes and prints with :func:`format_table`, and ``surerank report`` draws.

- :mod:`~surerank.robustness.typos`: the query typos; :mod:`~surerank.robustness.config`: what to run;
- :mod:`~surerank.robustness.checks`: the checks; :mod:`~surerank.robustness.run`: one call for all;
- :mod:`~surerank.robustness.result`: the typed document; :mod:`~surerank.robustness.table`: the table.
"""

from surerank.robustness.checks import ndcg_per_query
from surerank.robustness.config import CHECKS, RobustnessConfig
from surerank.robustness.result import KIND, VERSION, RobustnessResult
from surerank.robustness.run import run_robustness
from surerank.robustness.table import format_table
from surerank.robustness.typos import KEYBOARD_NEIGHBOURS, TYPO_KINDS, Typo, content_words, make_typo, typo_rng

__all__ = [
    "CHECKS", "KEYBOARD_NEIGHBOURS", "KIND", "TYPO_KINDS", "VERSION", "RobustnessConfig", "RobustnessResult",
    "Typo", "content_words", "format_table", "make_typo", "ndcg_per_query", "run_robustness", "typo_rng",
]
