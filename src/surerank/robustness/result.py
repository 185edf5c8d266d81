"""The typed result of ``surerank robustness``: what the run produces and the report and the table read.

A document like every other (``{"kind": "surerank.robustness", "version": 1, ...}``, see
:mod:`surerank.documents`).  Each check's figures are a dataclass; :meth:`RobustnessResult.from_dict` reads
a file field by field and refuses a hand-edited or truncated one with the file and the field
(``robustness-bm25.json: field 'order.top1_flip_rate' is missing``).  Files written before the header was
``kind``/``version`` (``"schema": "surerank.robustness/1"``, the same fields) are read as version 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from surerank import documents as doc
from surerank.errors import InputError

KIND = "surerank.robustness"
VERSION = 1
LEGACY_SCHEMA = "surerank.robustness/1"  # the header before kind/version; same fields as version 1
MEASURE = "nDCG@10"


class Figures:
    """A check's figures: dataclass fields read and written under the JSON keys of ``KEYS``.

    ``CHECKED`` fields are required and type-checked (what the report draws; a kind ending in ``?`` may be
    null: a mean over no query); the others are optional (a hand-made document may leave them out) and
    type-checked when present.  The dataclass fields stand in the order the check writes them.
    """

    KEYS: ClassVar[dict[str, str]] = {}  # attribute -> JSON key, where they differ
    CHECKED: ClassVar[dict[str, str]] = {}  # attribute -> kind (documents.get); required
    OPTIONAL: ClassVar[dict[str, str]] = {}  # attribute -> kind; may be absent or null
    NESTED: ClassVar[dict[str, Any]] = {}  # attribute -> reader(value, where, path)
    REQUIRED_NESTED: ClassVar[dict[str, str]] = {}  # nested attributes that must be there -> their JSON kind

    @classmethod
    def key(cls, name: str) -> str:
        return cls.KEYS.get(name, name)

    @classmethod
    def read(cls, data: Any, where: str, path: str) -> Any:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        values: dict[str, Any] = {}
        for name, kind in cls.CHECKED.items():
            values[name] = doc.get(data, cls.key(name), kind.rstrip("?"), where, path, nullable=kind.endswith("?"))
        for name, kind in cls.OPTIONAL.items():
            values[name] = doc.get(data, cls.key(name), kind, where, path, optional=True, nullable=True)
        for name, reader in cls.NESTED.items():
            if name in cls.REQUIRED_NESTED:
                doc.get(data, cls.key(name), cls.REQUIRED_NESTED[name], where, path)
            if cls.key(name) in data:
                values[name] = reader(data[cls.key(name)], where, f"{path}.{cls.key(name)}")
        return cls(**{k: v for k, v in values.items() if v is not None or k in cls.CHECKED})

    def to_dict(self) -> dict[str, Any]:
        return {self.key(f.name): _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, Figures):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _list_of(cls: type[Figures]) -> Any:
    def read(value: Any, where: str, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise InputError(f"{where}: field '{path}' must be a list")
        return [cls.read(item, where, f"{path}[{i}]") for i, item in enumerate(value)]
    return read


def _map_of(cls: type[Figures]) -> Any:
    def read(value: Any, where: str, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: field '{path}' must be a JSON object")
        return {str(k): cls.read(v, where, f"{path}.{k}") for k, v in value.items()}
    return read


FIGURES = dataclass(kw_only=True)


@FIGURES
class CleanFigures(Figures):
    """The ranker's nDCG@10 on the unperturbed lists (at ``depth``), overall and per query."""

    ndcg: float | None
    n_queries: int = 0
    depth: int | None = None
    per_query: dict[str, float] = field(default_factory=dict)

    KEYS: ClassVar[dict[str, str]] = {"ndcg": MEASURE}
    CHECKED: ClassVar[dict[str, str]] = {"ndcg": "number"}
    OPTIONAL: ClassVar[dict[str, str]] = {"n_queries": "int", "depth": "int", "per_query": "object"}


@FIGURES
class OrderFigures(Figures):
    """Input-order sensitivity: Kendall tau to the unshuffled output and the top-1 flip rate."""

    shuffles: int
    depth: int | None = None
    duplicate_groups: int = 0
    duplicate_items: int = 0
    kendall_tau_mean: float | None
    kendall_tau_min: float | None = None
    top1_flip_rate: float | None
    n_queries: int = 0
    per_query: dict[str, dict[str, float | None]] = field(default_factory=dict)
    seconds: float | None = None

    CHECKED: ClassVar[dict[str, str]] = {"kendall_tau_mean": "number", "top1_flip_rate": "number",
                                         "shuffles": "int"}
    OPTIONAL: ClassVar[dict[str, str]] = {"depth": "int", "duplicate_groups": "int", "duplicate_items": "int",
                                          "kendall_tau_min": "number", "n_queries": "int", "per_query": "object",
                                          "seconds": "number"}


@FIGURES
class PositionFigures(Figures):
    """Top-1 accuracy with the relevant passage at each position (empty lists: no query qualified)."""

    list_size: int = 0
    positions: list[int] = field(default_factory=list)
    top1_accuracy: list[float] = field(default_factory=list)
    spread: float | None = None
    n_queries: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float | None = None

    OPTIONAL: ClassVar[dict[str, str]] = {"list_size": "int", "spread": "number", "n_queries": "int",
                                          "skipped": "list", "seconds": "number"}

    @classmethod
    def read(cls, data: Any, where: str, path: str) -> PositionFigures:
        figures = super().read(data, where, path)
        accuracy = doc.get(data, "top1_accuracy", "list", where, path)
        if accuracy:  # what the plot draws: one accuracy per position
            figures.top1_accuracy = doc.numbers(data, "top1_accuracy", where, path)
            figures.positions = [int(p) for p in doc.numbers(data, "positions", where, path, length=len(accuracy))]
            figures.list_size = doc.get(data, "list_size", "int", where, path)
            figures.n_queries = doc.get(data, "n_queries", "int", where, path)
        return figures

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.spread is None:  # no query qualified: no spread, as the check has always written it
            del out["spread"]
        return out


@FIGURES
class TypoSeed(Figures):
    """One (kind, seed): nDCG@10 with the typo, without it, and the change."""

    seed: int
    ndcg: float | None = None
    clean: float | None = None
    delta: float | None = None
    n_queries: int = 0

    KEYS: ClassVar[dict[str, str]] = {"ndcg": MEASURE}
    CHECKED: ClassVar[dict[str, str]] = {"seed": "int"}
    OPTIONAL: ClassVar[dict[str, str]] = {"ndcg": "number", "clean": "number", "delta": "number",
                                          "n_queries": "int"}


@FIGURES
class TypoKind(Figures):
    """One typo kind, averaged over the seeds."""

    ndcg: float | None = None
    clean: float | None = None
    delta: float | None
    delta_std_over_seeds: float | None = None
    queries_hurt: int = 0
    queries_helped: int = 0
    n_queries: int = 0
    skipped: list[str] = field(default_factory=list)
    per_seed: list[TypoSeed] = field(default_factory=list)

    KEYS: ClassVar[dict[str, str]] = {"ndcg": MEASURE}
    CHECKED: ClassVar[dict[str, str]] = {"delta": "number?"}
    OPTIONAL: ClassVar[dict[str, str]] = {"ndcg": "number", "clean": "number", "delta_std_over_seeds": "number",
                                          "queries_hurt": "int", "queries_helped": "int", "n_queries": "int",
                                          "skipped": "list"}
    NESTED: ClassVar[dict[str, Any]] = {"per_seed": _list_of(TypoSeed)}


@FIGURES
class TypoExample(Figures):
    """A query and the same query with one typo, as the report's table shows it."""

    kind: str
    seed: int | None = None
    qid: str | None = None
    query: str
    typo: str

    CHECKED: ClassVar[dict[str, str]] = {"kind": "str", "query": "str", "typo": "str"}
    OPTIONAL: ClassVar[dict[str, str]] = {"seed": "int", "qid": "str"}


@FIGURES
class TypoFigures(Figures):
    """The typo check: per kind, and a few examples."""

    seeds: list[int]
    depth: int | None = None
    kinds: dict[str, TypoKind]
    delta_mean: float | None = None
    examples: list[TypoExample] = field(default_factory=list)
    seconds: float | None = None

    CHECKED: ClassVar[dict[str, str]] = {"seeds": "list"}
    OPTIONAL: ClassVar[dict[str, str]] = {"depth": "int", "delta_mean": "number", "seconds": "number"}
    NESTED: ClassVar[dict[str, Any]] = {"kinds": _map_of(TypoKind), "examples": _list_of(TypoExample)}
    REQUIRED_NESTED: ClassVar[dict[str, str]] = {"kinds": "object"}


@FIGURES
class Slice(Figures):
    """nDCG@10 on the trap slice and on the other queries (None: no query in that part)."""

    trap: float | None
    rest: float | None

    CHECKED: ClassVar[dict[str, str]] = {"trap": "number?", "rest": "number?"}


@FIGURES
class TrapFigures(Figures):
    """The lexical-trap slice: the ranker's figures beside BM25's, on the slice and on the rest."""

    definition: str = ""
    n_queries: int
    n_rest: int
    qids: list[str] = field(default_factory=list)
    ranker: Slice
    bm25: Slice
    bm25_margin: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None

    CHECKED: ClassVar[dict[str, str]] = {"n_queries": "int", "n_rest": "int"}
    OPTIONAL: ClassVar[dict[str, str]] = {"definition": "str", "qids": "list", "bm25_margin": "object",
                                          "seconds": "number"}
    NESTED: ClassVar[dict[str, Any]] = {"ranker": Slice.read, "bm25": Slice.read}
    REQUIRED_NESTED: ClassVar[dict[str, str]] = {"ranker": "object", "bm25": "object"}


@FIGURES
class DepthRow(Figures):
    """nDCG@10 when reranking the first-stage top ``depth`` (``capped_at``: the lists were shorter)."""

    depth: int
    ndcg: float
    capped_at: int | None = None

    KEYS: ClassVar[dict[str, str]] = {"ndcg": MEASURE}
    CHECKED: ClassVar[dict[str, str]] = {"depth": "int", "ndcg": "number"}
    OPTIONAL: ClassVar[dict[str, str]] = {"capped_at": "int"}


@FIGURES
class DepthFigures(Figures):
    """The depth check: one row per reranking depth, and the first stage's own figure."""

    depths: list[DepthRow]
    first_stage: float | None = None
    seconds: float | None = None

    OPTIONAL: ClassVar[dict[str, str]] = {"first_stage": "number", "seconds": "number"}
    NESTED: ClassVar[dict[str, Any]] = {"depths": _list_of(DepthRow)}
    REQUIRED_NESTED: ClassVar[dict[str, str]] = {"depths": "list"}


#: the checks in the document's order, and the class that reads each
PARTS: dict[str, type[Figures]] = {"order": OrderFigures, "position": PositionFigures, "typos": TypoFigures,
                                   "trap": TrapFigures, "depth": DepthFigures}


@dataclass(kw_only=True)
class RobustnessResult:
    """What ``run_robustness`` returns, ``surerank robustness --output`` writes, and the report draws.

    A check that was not run is None.  ``extra`` keeps fields a caller added (a benchmark's pairs per
    second), so a document read and written back loses nothing.
    """

    ranker: str
    ranker_config: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    n_queries: int = 0
    unjudged_queries: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    clean: CleanFigures
    order: OrderFigures | None = None
    position: PositionFigures | None = None
    typos: TypoFigures | None = None
    trap: TrapFigures | None = None
    depth: DepthFigures | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = KIND
    VERSION: ClassVar[int] = VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": KIND, "version": VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (f.name in PARTS and value is None):
                out[f.name] = _plain(value)
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_dict(cls, data: Any, where: str = "robustness JSON") -> RobustnessResult:
        """Read a document field by field; errors name ``where`` (the file) and the field."""
        check_header(data, where)
        ranker = doc.get(data, "ranker", "str", where)
        dataset = doc.get(data, "dataset", "str", where, optional=True, default="")
        clean = CleanFigures.read(doc.get(data, "clean", "object", where), where, "clean")
        parts = {name: reader.read(data[name], where, name) for name, reader in PARTS.items() if name in data}
        known = {f.name for f in fields(cls)} | {"kind", "version", "schema"}
        return cls(
            ranker=ranker, dataset=dataset, clean=clean, **parts,
            ranker_config=doc.get(data, "ranker_config", "object", where, optional=True, default={}),
            n_queries=doc.get(data, "n_queries", "int", where, optional=True, default=0),
            unjudged_queries=doc.get(data, "unjudged_queries", "list", where, optional=True, default=[]),
            config=doc.get(data, "config", "object", where, optional=True, default={}),
            seconds=doc.get(data, "seconds", "number", where, optional=True),
            extra={k: v for k, v in data.items() if k not in known},
        )


def check_header(data: Any, where: str) -> int:
    """The document's version; an untyped document, another kind or an unknown version is refused."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected the JSON object written by `surerank robustness --output`, "
                         f"got {type(data).__name__}")
    if "kind" not in data and data.get("schema") == LEGACY_SCHEMA:
        return VERSION  # written before the header was kind/version: the same fields
    if "kind" not in data:
        found = f"its 'schema' is {data['schema']!r}" if "schema" in data else "it has no 'schema' either"
        raise InputError(f"{where}: field 'kind' is missing ({found}); expected {KIND!r} version {VERSION}, "
                         "the JSON of `surerank robustness --output`")
    return doc.header(data, KIND, (VERSION,), where)


__all__ = ["KIND", "PARTS", "VERSION", "CleanFigures", "DepthFigures", "DepthRow", "OrderFigures",
           "PositionFigures", "RobustnessResult", "Slice", "TrapFigures", "TypoExample", "TypoFigures", "TypoKind",
           "TypoSeed", "check_header"]
