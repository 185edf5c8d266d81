"""Prepare what a GPU machine needs for ``benchmarks/throughput.py --device cuda``: a small, self-contained kit.

The device machine reaches no network and gets only the repository's working tree (64 MiB with what
is carried), so the kit holds:

* ``ce/``: the MiniLM-L6 cross-encoder shape (all-MiniLM-L6-v2 body + pooler + a fresh 1-logit head,
  the shape of cross-encoder/ms-marco-MiniLM-L6-v2) with **fp16** weights (~45 MB), config and tokenizer;
* ``dl19.jsonl``: the 43 TREC DL19 queries with their BM25 top-100 passages (id and text).

    python benchmarks/gpu_kit.py --out gpu-kit        # here, once (``gpu-kit/`` is git-ignored)
    # on the device: carry ["gpu-kit"], then
    PYTHONPATH=src python3 benchmarks/throughput.py --kit gpu-kit --device cuda --shapes ce --pairs 100000

Scores of the fresh head are meaningless; its cost per pair is the real model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # engine_fixtures: the local cross-encoder builder

logger = logging.getLogger("gpu_kit")


def write_fp16_cross_encoder(target: Path) -> Path:
    """The 6-layer cross-encoder shape, weights stored as float16."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from engine_fixtures import build_tiny_cross_encoder

    build_tiny_cross_encoder(target, layers=6)
    weights = target / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()}, str(weights))
    config = json.loads((target / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "float16"
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def write_queries(path: Path, year: int = 19) -> int:
    from surerank.eval.datasets import load_trec_dl

    queries, _ = load_trec_dl(year)
    with path.open("w") as f:
        for q in queries:
            f.write(json.dumps({"qid": q.id, "query": q.text,
                                "candidates": [{"id": c.id, "text": c.text} for c in q.candidates]}) + "\n")
    return len(queries)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "gpu-kit"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ce = write_fp16_cross_encoder(out / "ce")
    n = write_queries(out / "dl19.jsonl")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    logger.info("kit at %s: %d queries, fp16 cross-encoder %.1f MB, %.1f MB in all (device limit 64 MiB)",
                out, n, (ce / "model.safetensors").stat().st_size / 2**20, size / 2**20)
    return 0 if size < 64 * 2**20 else 1


if __name__ == "__main__":
    raise SystemExit(main())
