"""Running untrusted generated code and SQL, contained.  Knows nothing of ranking.

:class:`Sandbox` runs a program in its own limited process (namespaces, resource limits, clean environment,
wall-clock kill); :func:`run_sql` runs a query read-only against SQLite with a time limit.  The execution-based
selectors in :mod:`surerank.rankers` use both.
"""

from surerank.sandbox.process import Limits, RunResult, Sandbox, SandboxUnavailableError
from surerank.sandbox.sql import SqlResult, run_sql

__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailableError", "SqlResult", "run_sql"]
