"""Turn the parity figures written by tests/test_architectures.py into the table of docs/models.md.

    SURERANK_PARITY_JSON=/tmp/parity.json python -m pytest -q tests/test_architectures.py
    python benchmarks/models_table.py /tmp/parity.json            # markdown on stdout

One row per architecture case and backend: what the case is, the precision, the largest |difference| from
the transformers forward pass over the test's DL19 pairs (logits for cross-encoders, cosines for
bi-encoders), and whether the ranking was the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TOLERANCE = {"logit": 1e-3, "cosine": 1e-4}


def describe(row: dict[str, Any]) -> str:
    """The case in words: kind, pooling and config format, weights dtype."""
    if row["kind"] == "cross-encoder":
        what = "cross-encoder"
    else:
        fmt = {"old": "ST <= 5 files", "new": "ST 6 files", None: "no ST files"}[row.get("st_format")]
        what = f"bi-encoder, {row['pooling']} pooling, {fmt}"
        if row.get("max_seq_length"):
            what += f", max_seq_length {row['max_seq_length']}"
    if row.get("dtype", "float32") != "float32":
        what += f", {row['dtype']} weights"
    return what


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| architecture | case | backend | precision | max abs diff | bound | same ranking |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model_type"], r["kind"], r["id"], r["backend"])):
        lines.append(
            f"| {r['model_type']} | {describe(r)} | {r['backend']} | {r['precision']} | "
            f"{r['max_abs_diff']:.1e} ({r['metric']}) | {TOLERANCE[r['metric']]:.0e} | "
            f"{'yes' if r['same_ranking'] else '**no**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", type=Path, help="the JSON written via SURERANK_PARITY_JSON")
    args = parser.parse_args(argv)
    print(table(json.loads(args.figures.read_text())))


if __name__ == "__main__":
    main()
