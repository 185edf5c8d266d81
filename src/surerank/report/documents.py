"""The JSON documents the report reads besides robustness's: their kinds, and the typed trust and throughput ones.

Every JSON the report reads names its kind and version and is read field by field (:mod:`surerank.documents`)
into a dataclass; anything else is refused with the file and the missing or mistyped field.
:class:`TrustFigures` (``surerank.trust-figures``) and :class:`ThroughputTable` (``surerank.throughput``) are
what the benchmarks write; :mod:`surerank.report.readers` turns the other kinds into them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank import documents as schema
from surerank.documents import is_number
from surerank.errors import InputError


def load_json(path: str | Path) -> Any:
    """The parsed JSON of ``path``; unreadable or invalid files are refused with the file and position."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        # some messages end in "at" ("Unterminated string starting at"): do not say "at at"
        said = f"{error.msg} {where}" if error.msg.endswith(" at") else f"{error.msg} at {where}"
        raise InputError(f"{path}: not valid JSON ({said})") from None


EVAL_KIND = "surerank.eval"  # `surerank eval --json`
TRUST_FIGURES_KIND = "surerank.trust-figures"  # benchmarks/trust_dl.py --json, or made by hand
THROUGHPUT_KIND = "surerank.throughput"  # benchmarks/throughput.py --json
#: what ``--trust`` accepts: the artifact, calibrate's printed summary, figures, eval JSON with trust parts
TRUST_KINDS = ("surerank.trust", "surerank.calibration", TRUST_FIGURES_KIND, EVAL_KIND)
RISK_MEASURES = ("risk", "miss_rate", "error", "loss")  # lower is better; any other measure is a quality


def kind_of(data: Any, path: str, accepted: Sequence[str]) -> str:
    """The document's ``kind`` if it is one of ``accepted``; else an error naming the file and the field."""
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a JSON object with a 'kind' field (one of {', '.join(accepted)}), "
                         f"got {type(data).__name__}")
    kind = data.get("kind")
    if kind is None and data.get("format") == "surerank.trust" and "surerank.trust" in accepted:
        return "surerank.trust"  # version-1 artifacts said "format"
    if kind is None:
        raise InputError(f"{path}: field 'kind' is missing; expected one of {', '.join(accepted)} "
                         "(the JSON written by surerank's commands and benchmarks)")
    if kind not in accepted:
        raise InputError(f"{path}: field 'kind' is {kind!r}; this option reads {', '.join(accepted)}")
    return str(kind)


def scalars(record: Mapping[str, Any], where: str, path: str, nullable: bool = False) -> dict[str, Any]:
    """Every value a finite number (``nullable``: or null / NaN, read as None: a ratio with nothing to divide)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if nullable and (value is None or (isinstance(value, float) and math.isnan(value))):
            out[str(key)] = None
        elif not is_number(value):
            raise InputError(f"{where}: field '{path}.{key}' must be a finite number, got {value!r}")
        else:
            out[str(key)] = float(value)
    return out


@dataclass
class TrustFigures:
    """What the trust sections draw, by label: risk-coverage curves (with the measure on their y axis),
    reliability bins (low, high, observed, mean confidence) with summary scalars, and cutoff tables.

    Also a document of its own (``"kind": "surerank.trust-figures"``, :meth:`to_dict` / :meth:`from_dict`)::

        {"kind": "surerank.trust-figures", "version": 1,
         "risk_coverage": {label: {"measure": "nDCG@10" | "risk" | ..., "coverage": [...], "values": [...]}},
         "reliability": {label: {"bins": [{"low", "high", "observed", "confidence", "count"}],
                                 "summary": {"ece": ..., ...}}},
         "cutoffs": {label: {"x": column or null, "rows": [{column: number | string | bool | null}]}}}
    """

    risk_coverage: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    curve_measures: dict[str, str] = field(default_factory=dict)
    reliability: dict[str, tuple[list, dict]] = field(default_factory=dict)
    cutoffs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cutoff_x: dict[str, str | None] = field(default_factory=dict)

    KIND = TRUST_FIGURES_KIND
    VERSION = 1

    @property
    def empty(self) -> bool:
        return not (self.risk_coverage or self.reliability or self.cutoffs)

    def add_curve(self, label: str, measure: str, coverage: Sequence[float], values: Sequence[float]) -> None:
        self.risk_coverage[label] = sorted(zip(map(float, coverage), map(float, values), strict=True))
        self.curve_measures[label] = measure

    def add_bins(self, label: str, bins: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
        drawn = [(float(b["low"]), float(b["high"]), float(b["observed"]),
                  None if b.get("confidence") is None else float(b["confidence"]))
                 for b in bins if b.get("count", 1)]  # an empty bin has nothing to draw
        self.reliability[label] = (drawn, {k: v for k, v in summary.items() if is_number(v)})

    def add_rows(self, label: str, rows: Sequence[Mapping[str, Any]], x: str | None = None) -> None:
        self.cutoffs.setdefault(label, []).extend(dict(r) for r in rows)
        self.cutoff_x[label] = x

    def merge(self, other: TrustFigures, prefix: str = "") -> TrustFigures:
        def name(label: str) -> str:
            return f"{prefix}: {label}" if prefix else label

        for label, points in other.risk_coverage.items():
            self.risk_coverage[name(label)] = points
            self.curve_measures[name(label)] = other.curve_measures[label]
        for label, bins in other.reliability.items():
            self.reliability[name(label)] = bins
        for label, rows in other.cutoffs.items():
            self.add_rows(name(label), rows, other.cutoff_x.get(label))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.KIND, "version": self.VERSION,
            "risk_coverage": {label: {"measure": self.curve_measures[label], "coverage": [p[0] for p in pts],
                                      "values": [p[1] for p in pts]}
                              for label, pts in self.risk_coverage.items()},
            "reliability": {label: {"bins": [{"low": lo, "high": hi, "observed": ob, "confidence": co}
                                             for lo, hi, ob, co in bins], "summary": summary}
                            for label, (bins, summary) in self.reliability.items()},
            "cutoffs": {label: {"x": self.cutoff_x.get(label), "rows": rows} for label, rows in self.cutoffs.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "trust figures") -> TrustFigures:
        schema.header(data, cls.KIND, (cls.VERSION,), where)
        figures = cls()
        curves = schema.get(data, "risk_coverage", "object", where, optional=True, default={})
        for label, curve in curves.items():
            path = f"risk_coverage.{label}"
            if not isinstance(curve, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object")
            measure = schema.get(curve, "measure", "str", where, path)
            xs = schema.numbers(curve, "coverage", where, path, non_empty=True)
            figures.add_curve(str(label), measure, xs, schema.numbers(curve, "values", where, path, length=len(xs)))
        for label, rel in schema.get(data, "reliability", "object", where, optional=True, default={}).items():
            path = f"reliability.{label}"
            if not isinstance(rel, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object")
            bins = read_bins(schema.get(rel, "bins", "list", where, path), where, f"{path}.bins")
            summary = scalars(schema.get(rel, "summary", "object", where, path, optional=True, default={}),
                               where, f"{path}.summary")
            figures.add_bins(str(label), bins, summary)
        for label, table in schema.get(data, "cutoffs", "object", where, optional=True, default={}).items():
            path = f"cutoffs.{label}"
            if not isinstance(table, Mapping):
                raise InputError(f"{where}: field '{path}' must be a JSON object with 'rows'")
            rows = schema.get(table, "rows", "list", where, path)
            x = schema.get(table, "x", "str", where, path, optional=True, nullable=True)
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping) or not all(
                        v is None or isinstance(v, (str, bool)) or is_number(v) for v in row.values()):
                    raise InputError(f"{where}: field '{path}.rows[{i}]' must be an object of numbers, "
                                     "strings, booleans or nulls")
                if x is not None and not is_number(row.get(x)):
                    raise InputError(f"{where}: field '{path}.rows[{i}].{x}' (the x column) must be a number")
            figures.add_rows(str(label), rows, x)
        if figures.empty:
            raise InputError(f"{where}: no figures: 'risk_coverage', 'reliability' and 'cutoffs' are all empty")
        return figures


def read_bins(bins: list[Any], where: str, path: str) -> list[dict[str, Any]]:
    out = []
    for i, b in enumerate(bins):
        here = f"{path}[{i}]"
        if not isinstance(b, Mapping):
            raise InputError(f"{where}: field '{here}' must be a JSON object")
        out.append({"low": schema.get(b, "low", "number", where, here),
                    "high": schema.get(b, "high", "number", where, here),
                    "observed": schema.get(b, "observed", "number", where, here),
                    "confidence": schema.get(b, "confidence", "number", where, here, optional=True,
                                             nullable=True),
                    "count": schema.get(b, "count", "int", where, here, optional=True, default=1)})
    return out


@dataclass
class ThroughputTable:
    """Rows of throughput measurements (``"kind": "surerank.throughput"``): each row has a ``name`` and
    the ``rate`` column (``pairs_per_s`` unless the document says otherwise), plus any scalar columns::

        {"kind": "surerank.throughput", "version": 1, "rate": "pairs_per_s",
         "rows": [{"name": "surerank fp32", "pairs_per_s": 131.2, "peak_rss_mb": 412, ...}]}
    """

    rows: list[dict[str, Any]]
    rate: str = "pairs_per_s"
    source: str = ""

    KIND = THROUGHPUT_KIND
    VERSION = 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "version": self.VERSION, "rate": self.rate, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: Any, where: str = "throughput JSON") -> ThroughputTable:
        schema.header(data, cls.KIND, (cls.VERSION,), where)
        rate = schema.get(data, "rate", "str", where, optional=True, default="pairs_per_s")
        rows = schema.get(data, "rows", "list", where)
        if not rows:
            raise InputError(f"{where}: field 'rows' is empty: nothing to draw")
        for i, row in enumerate(rows):
            here = f"rows[{i}]"
            if not isinstance(row, Mapping):
                raise InputError(f"{where}: field '{here}' must be a JSON object")
            schema.get(row, "name", "str", where, here)
            schema.get(row, rate, "number", where, here)
            for key, value in row.items():
                if not (value is None or isinstance(value, (str, bool)) or is_number(value)):
                    raise InputError(f"{where}: field '{here}.{key}' must be a number, string, boolean or "
                                     f"null, got {type(value).__name__}")
        return cls(rows=[dict(r) for r in rows], rate=rate, source=where)


__all__ = ["EVAL_KIND", "RISK_MEASURES", "THROUGHPUT_KIND", "TRUST_FIGURES_KIND", "TRUST_KINDS", "ThroughputTable",
           "TrustFigures", "kind_of", "load_json", "read_bins", "scalars"]
