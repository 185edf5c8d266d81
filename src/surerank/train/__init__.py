"""Learning from the user's own judgments.  Today: fusion weights fitted on a dev split
(:func:`surerank.train.fusion.fit_fusion`, ``surerank train --fusion``); model training is still to come
(issue 24)."""

from surerank.train.fusion import fit_fusion, fused_rankings, fusion_ndcg, member_runs

__all__ = ["fit_fusion", "fused_rankings", "fusion_ndcg", "member_runs"]
