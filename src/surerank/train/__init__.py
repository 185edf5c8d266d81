"""Learning from the user's own data: fusion weights fitted on a dev split (:func:`surerank.train.fusion.fit_fusion`,
``surerank train --fusion``) and reranker models distilled from a teacher and/or fine-tuned on judgments
(:func:`surerank.train.model.train_model`, ``surerank train --student``; needs ``surerank[train]``, imported
only when a model is trained), soups of such students (:func:`surerank.train.soup.soup_students`,
``surerank train --soup``), and training queries a corpus does not have, written by an LLM
(:func:`surerank.train.synthetic.synthesise`, ``surerank train --synthesise``)."""

from surerank.train.config import TrainConfig
from surerank.train.fusion import fit_fusion, fused_rankings, fusion_ndcg, member_runs
from surerank.train.model import TrainingCollapsedError, TrainResult, train_model
from surerank.train.soup import soup_students
from surerank.train.synthetic import SynthesisConfig, SynthesisResult, synthesise
from surerank.train.teacher import TeacherScores, score_with_teacher

__all__ = [
    "SynthesisConfig", "SynthesisResult", "TeacherScores", "TrainConfig", "TrainResult", "TrainingCollapsedError",
    "fit_fusion", "fused_rankings", "fusion_ndcg", "member_runs", "score_with_teacher", "soup_students", "synthesise",
    "train_model",
]
