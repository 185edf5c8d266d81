"""T5 reranker throughput: surerank's ONNX and torch backends against the reference procedure, same pairs.

No trained monoT5 installs offline, so the model is a random-weight T5 of monoT5-base's shape (t5-base:
12 + 12 layers, d_model 768, d_ff 3072, 12 heads, 32,128 entries), with a sentencepiece-style BPE tokenizer
trained here on the DL19 texts: its scores are meaningless, its cost is the real one.  The anchor is the
reference procedure (pygaggle / the monoT5 model card): the tokenizer pads a batch, one decoder step on
transformers, log-softmax over the "true" / "false" logits.  Every contender scores the same DL19 (query,
passage) pairs; the script prints pairs/s, each one's ratio to the anchor (best of ``--repeats`` rounds,
contenders in rotating order) and its max |Δ score| from the anchor.

    python benchmarks/t5_backends.py --pairs 200

7 Dec 2026, 2-core AMD EPYC (AVX2): reference 4.5 pairs/s; surerank torch 8.3 (1.86x: pairs sorted by
length, less padding); surerank ONNX, the default on CPU, 9.0 (2.03x); max |Δ score| 2.4e-06; export and
check 53 s, once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TEMPLATE = "Query: {q} Document: {d} Relevant:"


def build_model(directory: Path, texts: list[str]) -> None:
    """A random t5-base-shaped T5 and a Metaspace BPE tokenizer with '▁true' / '▁false', saved as a folder."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=32_000, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(["true false Query: Document: Relevant:", *texts], trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>", model_max_length=512)
    config = transformers.T5Config(vocab_size=32_128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                                   num_decoder_layers=12, num_heads=12, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).eval().save_pretrained(directory)
    fast.save_pretrained(directory)


def reference_scorer(directory: Path, batch_size: int):
    """The model card's procedure, batch by batch in the input order."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(directory)).eval()
    true_id, false_id = tok.convert_tokens_to_ids("▁true"), tok.convert_tokens_to_ids("▁false")

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        out = []
        for begin in range(0, len(pairs), batch_size):
            chunk = pairs[begin:begin + batch_size]
            enc = tok([TEMPLATE.format(q=q, d=d) for q, d in chunk], padding=True, truncation=True,
                      max_length=512, return_tensors="pt")
            start = torch.zeros((len(chunk), 1), dtype=torch.long)
            with torch.inference_mode():
                logits = model(**enc, decoder_input_ids=start).logits[:, 0, [false_id, true_id]]
            out.append(torch.log_softmax(logits.float(), dim=-1)[:, 1].numpy())
        return np.concatenate(out)

    return score


def surerank_scorer(directory: Path, backend: str, batch_size: int):
    from surerank import Query, Reranker

    ranker = Reranker("t5-reranker", model=str(directory), backend=backend, batch_size=batch_size,
                      **({"device": "cpu"} if backend == "torch" else {}))

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        queries = [Query.from_texts(q, [d], id=str(i)) for i, (q, d) in enumerate(pairs)]
        return np.array([r.items[0].score for r in ranker.rank_many(queries)])

    return score, ranker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    from throughput import load_queries

    queries, _ = load_queries(args.pairs, per_query=10)  # 10 passages of each of the first queries
    pairs = [(q.text, c.text) for q in queries for c in q.candidates][:args.pairs]
    with tempfile.TemporaryDirectory(prefix="t5-bench-") as tmp:
        # the exported graph (1 GB) of a model that exists only for this run goes with it
        os.environ["SURERANK_CACHE"] = str(Path(tmp) / "cache")
        directory = Path(tmp) / "t5-base-random"
        build_model(directory, [t for pair in pairs for t in pair])
        started = time.perf_counter()
        onnx_score, onnx_ranker = surerank_scorer(directory, "onnx", args.batch_size)
        export_s = time.perf_counter() - started
        torch_score, _ = surerank_scorer(directory, "torch", args.batch_size)
        contenders = {"reference (transformers, model card)": reference_scorer(directory, args.batch_size),
                      "surerank torch": torch_score, "surerank onnx (default on CPU)": onnx_score}
        for fn in contenders.values():  # warm-up
            fn(pairs[:8])
        best: dict[str, float] = {}
        scores: dict[str, np.ndarray] = {}
        names = list(contenders)
        for round_ in range(args.repeats):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                start = time.perf_counter()
                scores[name] = contenders[name](pairs)
                best[name] = max(best.get(name, 0.0), len(pairs) / (time.perf_counter() - start))
    anchor = names[0]
    print(f"T5 reranker (random t5-base weights, monoT5 formula), {len(pairs)} DL19 pairs, batch "
          f"{args.batch_size}, best of {args.repeats} rounds; ONNX export + check {export_s:.0f} s once "
          f"({onnx_ranker.describe()['export_parity']['measure']} "
          f"{onnx_ranker.describe()['export_parity']['value']:.2e})")
    print(f"{'contender':40s} {'pairs/s':>8s} {'ratio':>6s} {'max |Δ score|':>14s}")
    for name in names:
        delta = float(np.max(np.abs(scores[name] - scores[anchor])))
        print(f"{name:40s} {best[name]:8.1f} {best[name] / best[anchor]:5.2f}x {delta:14.2e}")


if __name__ == "__main__":
    main()
