"""What precision="auto" chooses, and why its bound sits where it does (docs/engine.md, "precision auto").

    nice python benchmarks/precision_auto.py            # auto's figure and choice for the models here
    nice python benchmarks/precision_auto.py --ndcg     # + all-MiniLM-L6-v2 int8 graphs of growing drift:
                                                        #   drift figure and DL19/DL20 nDCG@10 vs fp32

Models: all-MiniLM-L6-v2 (real weights, embedding), its six layers under a random 1-logit head (the
cross-encoder shape of benchmarks/throughput.py), a two-layer one, tiny random-weight cross-encoders of
each architecture (tests/arch_fixtures.py; needs torch), and all-mpnet-base-v2 when its packages are
installed.  With ``--ndcg`` the same drift figure is measured for int8 graphs that spare fewer
projections (every MatMul int8; then per-tensor weights too) and each is run on all of DL19 and DL20,
one sequence per batch as the engine runs int8.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # engine_fixtures / arch_fixtures: the local model builders


def models(tmp: Path) -> list[tuple[str, Path, str]]:
    from engine_fixtures import build_tiny_cross_encoder
    from surerank.engine.checkpoint.locate import default_model_dir

    out = [("all-MiniLM-L6-v2 (embedding)", default_model_dir(), "mean"),
           ("MiniLM-L6 body + random head (cross-encoder)", build_tiny_cross_encoder(tmp / "ce6", layers=6),
            "classifier"),
           ("MiniLM 2 layers + random head (cross-encoder)", build_tiny_cross_encoder(tmp / "ce2"), "classifier")]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        from arch_fixtures import build_model

        for family in ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert", "gte"):
            out.append((f"tiny random {family} (cross-encoder)", build_model(tmp / family, family), "classifier"))
    from surerank.engine.checkpoint.split_packages import split_package_model_dir, split_parts

    if split_parts("all-mpnet-base-v2"):
        out.append(("all-mpnet-base-v2 (embedding)", split_package_model_dir("all-mpnet-base-v2"), "mean"))
    return out


def choices(tmp: Path) -> None:
    from surerank.engine.checkpoint.files import read_model_files
    from surerank.engine.graphs import auto_precision

    print("| model | drift (max |Δ| / sd) | mean |Δ| / sd | bound | auto chooses |")
    print("|---|---|---|---|---|")
    for name, directory, head in models(tmp):
        files = read_model_files(directory)
        pooling = files.pooling if head != "classifier" else head
        r = auto_precision(files, pooling)
        drift = "-" if r.get("drift") is None else f"{r['drift']:.3f}"
        mean = "-" if r.get("mean_drift") is None else f"{r['mean_drift']:.3f}"
        print(f"| {name} | {drift} | {mean} | {r['bound']} | {r['choice']} |", flush=True)


def per_tensor_all(src: Path, dst: Path) -> None:
    """Every MatMul and Attention int8 with per-tensor weights (heads fp32): the coarsest recipe."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
                     op_types_to_quantize=["MatMul", "Attention"], nodes_to_exclude=["pooler", "classifier"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def ndcg_table(tmp: Path) -> None:
    import surerank
    from surerank.engine.checkpoint.files import read_model_files
    from surerank.engine.checkpoint.locate import default_model_dir
    from surerank.engine.graphs import built_graph
    from surerank.engine.onnx.drift import measure_drift
    from surerank.engine.quantize.recipes import quantize_graph
    from surerank.eval.datasets import load_trec_dl
    from surerank.eval.metrics import evaluate
    from surerank.formats import lists_to_run

    files = read_model_files(default_model_dir())
    fp32 = built_graph(files, "mean", "fp32")
    graphs = {"fp32": fp32, "int8-fast (auto's choice)": built_graph(files, "mean", "int8-fast"),
              "int8": built_graph(files, "mean", "int8")}
    graphs["every MatMul int8"] = tmp / "pc-all.onnx"
    quantize_graph(fp32, graphs["every MatMul int8"], "pc-all", files, "mean")
    graphs["every MatMul int8, per-tensor weights"] = tmp / "pt-all.onnx"
    per_tensor_all(fp32, graphs["every MatMul int8, per-tensor weights"])
    data = {y: load_trec_dl(y) for y in ("19", "20")}
    base: dict[str, float] = {}
    print("\n| all-MiniLM-L6-v2 graph | drift (max |Δ| / sd) | DL19 nDCG@10 | DL20 nDCG@10 |")
    print("|---|---|---|---|")
    for label, path in graphs.items():
        drift = measure_drift(fp32, path, files, "mean")["drift"] if label != "fp32" else 0.0
        ranker = surerank.Reranker("embedding", precision="fp32" if label == "fp32" else "int8")
        ranker.engine_config.onnx_path = str(path)  # this graph, one sequence per batch for int8
        cells = []
        for year, (queries, qrels) in data.items():
            value = evaluate(lists_to_run(ranker.rank_many(queries)), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
            base.setdefault(year, value)
            cells.append(f"{value:.4f} ({value - base[year]:+.4f})")
        print(f"| {label} | {drift:.3f} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ndcg", action="store_true", help="also the DL19/DL20 table of MiniLM int8 graphs")
    parser.add_argument("--no-choices", action="store_true", help="skip the per-model table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_choices:
            choices(Path(tmp))
        if args.ndcg:
            ndcg_table(Path(tmp))


if __name__ == "__main__":
    main()
