"""Peak memory when reranking many long candidates: 1,000 candidates of 2,000 tokens each.

Each run happens in its own process so ``ru_maxrss`` is that run's peak.  Runs at 100 and 1,000
candidates show whether memory grows with the input (it should barely: token ids are int32 arrays,
tokenizer Encoding objects are dropped every 2,048 texts, and each model batch is capped by the token
budget).  The figure for the model alone (loaded, one tiny query) is printed as the floor.

    nice python benchmarks/long_documents.py                       # truncate mode (reports truncation)
    nice python benchmarks/long_documents.py --mode passages --candidates 100,1000 --precision int8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_documents(n: int, tokens: int) -> list[str]:
    """``n`` documents of ``tokens`` tokens each, cut from the Cranfield abstracts at token boundaries."""
    from surerank.engine.checkpoint.locate import default_model_dir
    from surerank.engine.text.tokenize import TokenizerEngine
    from surerank.eval.datasets import data_root

    raw = (data_root() / "cranfield" / "cran.all.1400").read_text()
    text = " ".join(p.split(".W", 1)[1].strip().replace("\n", " ") for p in raw.split("\n.I ")[1:] if ".W" in p)
    tok = TokenizerEngine(default_model_dir() / "tokenizer.json")
    offsets = tok.tokenizer.encode(text, add_special_tokens=False).offsets
    span = len(offsets) - tokens - 1
    docs = []
    for i in range(n):
        start = (i * 997) % span  # different, overlapping slices of the collection
        docs.append(text[offsets[start][0]:offsets[start + tokens][0]])
    return docs


def worker(n: int, tokens: int, mode: str, precision: str, model_only: bool) -> dict:
    import surerank

    ranker = surerank.Reranker("embedding", precision=precision, long_documents=mode)
    ranker.rank("warm up", ["a passage"])
    if model_only:
        return {"candidates": 0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    docs = make_documents(n, tokens)
    start = time.perf_counter()
    ranked = ranker.rank("pressure distribution on a swept wing at supersonic speed", docs)
    seconds = time.perf_counter() - start
    t = [i.truncation for i in ranked.items]
    return {
        "candidates": n, "tokens_each": tokens, "mode": mode, "precision": precision, "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "input_mb": round(sum(len(d) for d in docs) / 2**20, 1),
        "truncated": sum(x.truncated for x in t), "passages_scored": sum(x.passages_scored for x in t),
        "tokens_total": sum(x.tokens_total for x in t), "tokens_dropped": sum(x.tokens_dropped for x in t),
        "engine": ranked.info["engine"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", default="100,1000")
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--mode", default="truncate", choices=["truncate", "passages"])
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.tokens, args.mode, args.precision, args.model_only)))
        return 0
    base = [sys.executable, __file__, "--tokens", str(args.tokens), "--mode", args.mode,
            "--precision", args.precision]
    runs = [[*base, "--worker", "0", "--model-only"]]
    runs += [[*base, "--worker", n] for n in args.candidates.split(",")]
    for cmd in runs:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if r["candidates"] == 0:
            print(f"model loaded, nothing ranked: peak RSS {r['peak_rss_mb']:.1f} MB")
            continue
        print(f"{r['candidates']:5d} candidates x {r['tokens_each']} tokens ({r['input_mb']} MB of text), "
              f"mode={r['mode']} {r['precision']}: peak RSS {r['peak_rss_mb']:.1f} MB, {r['seconds']} s, "
              f"truncated {r['truncated']}, passages {r['passages_scored']}, "
              f"tokens dropped {r['tokens_dropped']} of {r['tokens_total']}, "
              f"batches {r['engine']['batches']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
