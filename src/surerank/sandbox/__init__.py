"""Running untrusted generated code and SQL, contained.  Knows nothing of ranking.

:class:`Sandbox` runs a program in its own limited process (a new root holding only the interpreter, namespaces,
its own identity, resource limits, clean environment, wall-clock kill); :func:`run_sql` / :func:`run_sql_many` run
queries read-only against SQLite in a limited worker process under an authorizer.  The execution-based
selectors in :mod:`surerank.rankers` use both.
"""

from surerank.sandbox.process import Limits, RunResult, Sandbox, SandboxUnavailableError
from surerank.sandbox.sql import SqlLimits, SqlResult, run_sql, run_sql_many

__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailableError", "SqlLimits", "SqlResult", "run_sql",
           "run_sql_many"]
