"""Errors a user can act on: each message names the field, the file or the limit at fault."""

from __future__ import annotations


class SureRankError(Exception):
    """Base class of every error surerank raises on purpose."""


class InputError(SureRankError, ValueError):
    """The input is malformed: a bad field, a duplicate id, a bad line in a file."""


class IncompleteCheckpointError(InputError):
    """A checkpoint lacks tensors the ranker needs (a cross-encoder's head, an LM head, a T5 decoder), which
    transformers would initialise at random: its scores would be noise, and nothing else would say so."""

    @classmethod
    def check(cls, model: str, missing: list[str] | tuple[str, ...], needs: str, hint: str = "") -> None:
        """Raise, naming up to eight of the ``missing`` tensors, unless there are none."""
        if not missing:
            return
        missing = sorted(missing)
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise cls(f"model: {model} {needs}: {shown} are not in its weights, and transformers would initialise "
                  f"them at random{hint}")


class UnknownRankerError(SureRankError, KeyError):
    """No ranker is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(SureRankError, ImportError):
    """An optional extra is needed for this ranker or backend."""

    @classmethod
    def for_extra(cls, package: str, extra: str, what: str) -> MissingDependencyError:
        return cls(f"{what} needs the '{package}' package: pip install 'surerank[{extra}]'")


class LimitExceededError(SureRankError, ValueError):
    """A request is over a configured limit (documents, characters, tokens, budget)."""
