"""The rankers by family (issue 23): every old flat module path still imports, warns once that it moved, and
hands out the very objects of the new home; the registry names only new paths; and what a trust artifact or a
cache keys on (``describe()``) carries no module path, so artifacts written before the move still match."""

from __future__ import annotations

import importlib
import json
import sys
import warnings

import pytest

from surerank.registry import all_specs, create

#: old module -> (its new homes, under ``surerank.``; the public names it had before the move, all still there)
MOVED = {
    "embedding": (["rankers.encoders.embedding"], "EmbeddingRanker b_count"),
    "cross_encoder": (["rankers.encoders.cross_encoder"], "DEFAULT_CROSS_ENCODER SCORE_MODES CrossEncoderRanker"),
    "t5": (["rankers.encoders.t5"], "BACKENDS T5Variant VARIANTS T5Ranker"),
    "llm_base": (["rankers.llm.base", "scores"],
                 "LOGPROB_FLOOR LLMBackendError answer_label_scores label_scores LLMRanker sigmoid"),
    "llm_pointwise": (["rankers.llm.pointwise"], "PointwiseLLMRanker QueryLikelihoodRanker"),
    "llm_pairwise": (["rankers.llm.pairwise"], "SAMPLINGS sample_pairs PairwiseLLMRanker"),
    "llm_setwise": (["rankers.llm.setwise"], "SetwiseLLMRanker"),
    "llm_listwise": (["rankers.llm.listwise"], "window_starts rank_windows ListwiseLLMRanker FirstLLMRanker"),
    "llm_jointrank": (["rankers.llm.jointrank"], "block_design JointRankLLMRanker"),
    "mbr": (["rankers.generated.mbr", "rankers.nested"], "RankerRef make_ranker MBRRanker"),
    "qe": (["rankers.generated.qe"],
           "FORMAT EXTRA_FEATURES NORMALISATIONS FIT_METHODS GRID QERanker load_weights normalise_columns"),
    "vote": (["rankers.generated.vote"], "VoteRanker"),
    "coder_reviewer": (["rankers.generated.coder_reviewer"], "MODES CODER_PREFIX REVIEWER_PREFIX CoderReviewerRanker"),
    "code_tests": (["rankers.generated.code_tests"], "CodeTest is_literal_call docstring_examples perturbed_inputs"),
    "execution": (["rankers.generated.execution"],
                  "METHODS TEST_PROMPT HARNESS_SOURCE canonical_literal CandidateRun ExecutionRanker "
                  "SqlExecutionRanker"),
    "exec_harness": (["rankers.generated.exec_harness"],
                     "PR_SET_DUMPABLE MARKER FORGERY_HINTS CAPTURE_KEPT canonical Harness reap_orphans main"),
    "utilities": (["rankers.generated.answers", "rankers.generated.similarity"],
                  "Features Utility canonical_number normalise_answer regex_extractor exact_match token_f1 "
                  "cosine_matrix chrf_utility aggregate_ngrams bleu_utility exact_utility normalised_utility "
                  "f1_utility callable_utility STRING_UTILITIES string_utility"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_once_and_re_exports_the_new_homes_objects(old):
    path = f"surerank.rankers.{old}"
    sys.modules.pop(path, None)
    homes, names = MOVED[old]
    with pytest.warns(DeprecationWarning, match=f"{path} moved to surerank.{homes[0]}"):
        alias = importlib.import_module(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(path)  # once: a second import is the cached module, silent
    assert set(names.split()) <= set(alias.__all__), f"{path} lost {set(names.split()) - set(alias.__all__)}"
    modules = [importlib.import_module(f"surerank.{home}") for home in homes]
    for name in alias.__all__:  # the very objects of the new home, not copies
        assert any(getattr(alias, name) is getattr(m, name, None) for m in modules), name


def test_the_registry_names_the_new_paths_only():
    old = {f"surerank.rankers.{name}" for name in MOVED}
    for spec in all_specs().values():
        module = spec.target.partition(":")[0]
        assert module not in old, f"{spec.name} still points at the alias {module}"
    for name, spec in all_specs().items():
        if spec.target.startswith("surerank.") and not spec.missing():
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                assert spec.load().__module__ == spec.target.partition(":")[0], name


@pytest.mark.parametrize("name, options", [
    ("first-stage", {}),
    ("vote", {"extract": r"answer: (\d+)"}),
    ("mbr", {"utility": "exact"}),
    ("fusion", {"rankers": ["first-stage", {"name": "vote"}]}),
    ("qe", {"qe": "first-stage", "features": ["length"], "weights": {"qe:first-stage": 1.0, "length": 0.5}}),
    ("sql-exec", {}),
])
def test_a_description_carries_no_module_path(name, options):
    """Trust artifacts fingerprint ``describe()`` and caches key on it: a module path in it would refuse every
    artifact written before the move.  None is there (the ranker's registered name is)."""
    text = json.dumps(create(name, **options).describe(), default=str)
    assert "surerank." not in text, text
