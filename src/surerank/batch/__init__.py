"""Batch reranking of many (query, passage) pairs, locally or on Ray, resumable after a failure.

``run_batch(BatchConfig(...))`` is the library entry point; ``surerank batch`` is its command line.
Ray is imported only when ``engine="ray"``.
"""

from surerank.batch.job import BatchConfig, BatchResult, merge_shards, run_batch
from surerank.batch.local_runner import RankerConfig
from surerank.batch.manifest import Manifest, ShardRecord
from surerank.batch.ray_runner import RayOptions

__all__ = ["BatchConfig", "BatchResult", "Manifest", "RankerConfig", "RayOptions", "ShardRecord",
           "merge_shards", "run_batch"]
