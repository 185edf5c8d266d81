"""What a trust artifact must match: the parts of a ranker's configuration that change its scores.

A calibration map, an abstention threshold and a conformal cutoff are valid only for the scores they were
fitted on, so an artifact records the ranker's ``describe()`` and is refused for another one.  But
``describe()`` also says how the ranker *runs* here: the model's install path, the thread count, the
device, the batch size.  None of those changes a score (the batch size only when the engine says its
output is ``batch_invariant``), and an artifact must travel to a machine where they differ.

:func:`score_fingerprint` keeps what changes scores and drops the rest:

* always dropped (:data:`RUNTIME_KEYS`): ``model_dir``, ``device``, ``threads``, ``workers``, and for LLM
  backends ``base_url``, ``concurrency``, ``timeout``, ``max_retries``; and ``precision_auto``, the drift
  figure behind ``precision="auto"`` (the precision it resolved to, and int8's ``fp32_nodes``, stay);
* ``batch_size`` and ``token_budget`` are dropped when ``batch_invariant`` is true (fp32, or int8 one
  sequence per batch); otherwise a sequence's score depends on its batch mates and they stay;
* ``model`` (a name or a local path) is dropped when content hashes (``weights_sha256``,
  ``tokenizer_sha256``) identify the model: a copy at another path is the same model, another checkpoint
  under the same name is not;
* a trained model's ``training_card.path`` (where its card lies: the install path again) is dropped; the rest
  of the card (student, loss, teacher, seed) stays.

Everything else stays: the content hashes, precision, backend, int8's ``fp32_nodes``, max length, pooling,
prefixes, long-document policy, the ranker's name and its own options (BM25's k1/b, fusion members, LLM
prompts and window sizes...).  :func:`differences` lists the fields that differ, by dotted path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

RUNTIME_KEYS = frozenset({"model_dir", "device", "threads", "workers",
                          "base_url", "concurrency", "timeout", "max_retries", "precision_auto"})
BATCH_KEYS = frozenset({"batch_size", "token_budget"})
CONTENT_KEYS = ("weights_sha256", "tokenizer_sha256")
CARD_RUNTIME_KEYS = frozenset({"path"})  # of describe()["training_card"]: where the card lies, not what it says


def _plain(value: Any) -> Any:
    """JSON-normalised (tuples → lists, keys → strings), so a fresh describe() compares with a loaded one."""
    return json.loads(json.dumps(value, default=str))


def score_fingerprint(description: Mapping[str, Any], content: bool = True) -> dict[str, Any]:
    """The fields of ``description`` that change scores (nested descriptions, e.g. fusion members, too).

    ``content=False`` is for artifacts written before content hashes were recorded: the hashes are left
    out and the model is compared by its name.
    """
    return _fingerprint(_plain(dict(description)), content)


def _fingerprint(description: dict[str, Any], content: bool) -> dict[str, Any]:
    invariant = description.get("batch_invariant") is True
    hashed = content and any(k in description for k in CONTENT_KEYS)
    out: dict[str, Any] = {}
    for key, value in description.items():
        if key in RUNTIME_KEYS or (invariant and key in BATCH_KEYS) or (hashed and key == "model"):
            continue
        if not content and key in CONTENT_KEYS:
            continue
        if key == "training_card" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in CARD_RUNTIME_KEYS}
        out[key] = _value(value, content)
    return out


def _value(value: Any, content: bool) -> Any:
    if isinstance(value, dict):
        return _fingerprint(value, content)
    if isinstance(value, list):
        return [_value(v, content) for v in value]
    return value


def differences(fitted: Any, now: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(field, fitted value, current value)`` for every leaf that differs; a missing side is None."""
    if isinstance(fitted, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(fitted) | set(now)):
            where = f"{path}.{key}" if path else str(key)
            out += differences(fitted.get(key), now.get(key), where)
        return out
    if isinstance(fitted, list) and isinstance(now, list) and len(fitted) == len(now):
        out = []
        for i, (a, b) in enumerate(zip(fitted, now, strict=True)):
            out += differences(a, b, f"{path}[{i}]")
        return out
    return [] if fitted == now else [(path or "(ranker)", fitted, now)]


def describe_difference(field: str, fitted: Any, now: Any) -> str:
    """``field: fitted X, now Y``; long hashes are shortened to 16 characters."""
    def show(value: Any) -> str:
        if value is None:
            return "not recorded"
        if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return repr(value[:16] + "...")
        return repr(value)

    return f"{field}: fitted {show(fitted)}, now {show(now)}"


__all__ = ["BATCH_KEYS", "CARD_RUNTIME_KEYS", "CONTENT_KEYS", "RUNTIME_KEYS", "describe_difference", "differences",
           "score_fingerprint"]
