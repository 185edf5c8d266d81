"""surerank.engine: transformer encoders (and the T5 reranker's first step) on ONNX Runtime or torch.

Layers, each importing only those above it in this list:

* ``checkpoint/``: a checkpoint's files, its family's conventions, where it comes from (default package,
  local folder, split packages, hub), and the one transformers loader (with the remote-code refusal);
* ``text/``: tokenisation, token-budget batches, long documents as passages;
* ``onnx/``: fp32 graphs -- graph I/O and sessions, calibration text, parity and drift, the hand-built
  BERT graph, the torch export (or a repository's own graph), the T5 first step;
* ``quantize/``: int8 -- dynamic quantisation, outlier channels, the projection search, one recipe table;
* ``graphs``: :func:`~surerank.engine.graphs.provision` picks, makes and caches the graph for a checkpoint,
  head and precision (and resolves ``precision="auto"``);
* ``runtime/``: the ONNX and torch backends, the engine that runs batches, the encoder rankers' base.
"""
