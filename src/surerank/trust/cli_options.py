"""Trust options shared by the ``rerank`` command line (and anything else that ranks and then decides).

``add_arguments(parser)`` adds ``--trust``, ``--cutoff``, ``--k-min``, ``--k-max`` and ``--abstain``;
``check(args, ranker_description)`` loads and checks the artifact and the options *before* anything is
scored (a refused artifact must not cost a whole run); ``apply(args, lists, ranker_description)`` fills
probability / keep / abstain on the ranked lists (the order of items is never changed); ``trust_summary``
gives ``surerank eval`` the trust metrics of a JSONL run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from surerank.errors import InputError
from surerank.trust.abstention import REFERENCE_FREE
from surerank.trust.cutoffs import METHODS as ADAPTIVE
from surerank.trust.cutoffs import PARAMETER_NAMES, parse_cutoff
from surerank.types import RankedList


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("trust (probabilities, keep flags, abstention)")
    group.add_argument("--trust", metavar="ARTIFACT",
                       help="trust artifact from `surerank calibrate`: attaches probabilities and applies "
                            "its abstention and conformal cutoff; refused if fitted for another ranker setup")
    group.add_argument("--cutoff", metavar="METHOD[:VALUE]",
                       help="keep flags from a cutoff: conformal (from --trust) or one of "
                            f"{', '.join(ADAPTIVE)}, e.g. gap, zscore:1.5, mass:0.9, threshold:0.5 "
                            "(mass/threshold need --trust)")
    group.add_argument("--k-min", type=int, default=1, help="adaptive cutoffs keep at least this many")
    group.add_argument("--k-max", type=int, default=None, help="adaptive cutoffs keep at most this many")
    group.add_argument("--abstain", metavar="CONFIDENCE:THRESHOLD",
                       help=f"abstain when a reference-free confidence ({', '.join(REFERENCE_FREE)}) "
                            "of the top-10 scores is below THRESHOLD, e.g. max:0.4 "
                            "(default: the artifact's rule, if any)")


def parse_abstain(text: str) -> tuple[str, float]:
    confidence, _, threshold = text.partition(":")
    if confidence not in REFERENCE_FREE or not threshold:
        raise InputError(f"--abstain: expected CONFIDENCE:THRESHOLD with CONFIDENCE one of "
                         f"{', '.join(REFERENCE_FREE)}, got {text!r}")
    try:
        return confidence, float(threshold)
    except ValueError:
        raise InputError(f"--abstain: threshold {threshold!r} is not a number") from None


_LOADED = "_trust_artifact"  # where check() leaves the loaded artifact on args, for apply()


def check(args: argparse.Namespace, ranker_description: Mapping[str, Any] | None = None) -> Any:
    """Load the artifact, refuse it for another ranker, and parse every trust option: before scoring.

    Returns the loaded :class:`~surerank.trust.artifact.TrustArtifact` (None without ``--trust``) and keeps
    it on ``args`` so :func:`apply` does not read it twice.
    """
    artifact = None
    if getattr(args, "trust", None):
        from surerank.trust.artifact import TrustArtifact

        artifact = TrustArtifact.load(args.trust)
        if ranker_description is not None:
            artifact.check_ranker(ranker_description)
    if getattr(args, "abstain", None):
        parse_abstain(args.abstain)
    cutoff = getattr(args, "cutoff", None)
    if cutoff is not None:
        method, _ = parse_cutoff(cutoff, "--cutoff")
        if method == "conformal" and (artifact is None or artifact.cutoff is None):
            raise InputError("--cutoff conformal: needs --trust with an artifact fitted with --cutoff-alpha")
        if method in ("mass", "threshold") and (artifact is None or artifact.calibration is None):
            raise InputError(f"--cutoff {method}: reads probabilities, so it needs --trust with an artifact "
                             "fitted with a calibration --method")
    setattr(args, _LOADED, (args.trust, artifact))
    return artifact


def apply(args: argparse.Namespace, lists: Sequence[RankedList],
          ranker_description: Mapping[str, Any] | None = None) -> Sequence[RankedList]:
    """Apply whatever trust options were given; a no-op when none were."""
    loaded = getattr(args, _LOADED, None)
    if loaded is not None and loaded[0] == getattr(args, "trust", None):
        artifact = loaded[1]
        if artifact is not None and ranker_description is not None:
            artifact.check_ranker(ranker_description)
    else:
        artifact = check(args, ranker_description)
    if artifact is not None:
        if artifact.calibration is not None:
            artifact.calibration.apply(lists)
        if artifact.abstention is not None and not getattr(args, "abstain", None):
            artifact.abstention.apply(lists)
    if getattr(args, "abstain", None):
        confidence, value = parse_abstain(args.abstain)
        from surerank.trust.abstention import Abstainer

        Abstainer(confidence=confidence, threshold=value).apply(lists)
    cutoff = getattr(args, "cutoff", None)
    if cutoff is None and artifact is not None and artifact.cutoff is not None:
        cutoff = "conformal"
    if cutoff is not None:
        method, value = parse_cutoff(cutoff, "--cutoff")
        if method == "conformal":
            artifact.cutoff.apply(lists)  # check() made sure it is there
        else:
            options: dict[str, Any] = {"method": method, "k_min": args.k_min, "k_max": args.k_max}
            if value is not None:
                options[PARAMETER_NAMES[method]] = value
            from surerank.trust.cutoffs import AdaptiveCutoff

            AdaptiveCutoff(**options).apply(lists)
    return lists


def trust_summary(path: str, qrels: Mapping[str, Mapping[str, int]], relevance_level: int,
                  echo: Callable[[str], Any]) -> dict[str, Any] | None:
    """For ``surerank eval``: trust metrics of a JSONL run that carries probabilities, keep or abstain.

    Returns None (and prints nothing) for TREC run files and for JSONL output without trust fields.
    """
    if not str(path).endswith((".jsonl", ".ndjson")):
        return None
    from surerank.trust.output_metrics import read_ranked_jsonl, trust_metrics

    metrics = trust_metrics(read_ranked_jsonl(path), qrels, relevance_level)
    parts = [k for k in ("calibration", "cutoff", "abstention") if k in metrics]
    if not parts:
        return None
    echo(f"trust of {path} ({metrics['queries']} judged queries, relevant = grade >= {relevance_level}):")
    if "calibration" in metrics:
        c = metrics["calibration"]
        echo(f"  calibration: ECE(15 bins) {c['ece']:.4f}  Brier {c['brier']:.4f}  log loss "
             f"{c['log_loss']:.4f}  mean probability {c['mean_probability']:.3f} vs base rate "
             f"{c['base_rate']:.3f} ({c['pairs']} pairs, unjudged = not relevant)")
    if "cutoff" in metrics:
        c = metrics["cutoff"]
        echo(f"  keep flags: mean kept {c['mean_kept']:.1f}  recall of relevant candidates "
             f"{c['recall_of_candidates']:.3f} (of all judged relevant {c['recall_of_judged']:.3f})  "
             f"precision {c['precision']:.3f}")
    if "abstention" in metrics:
        a = metrics["abstention"]
        answered = "-" if a["quality_answered"] is None else f"{a['quality_answered']:.4f}"
        echo(f"  abstention: rate {a['abstention_rate']:.1%}  {a['metric']} answered {answered} vs all "
             f"{a['quality_all']:.4f}  nAUC of the confidence {a['nauc']:.3f}")
    return metrics
