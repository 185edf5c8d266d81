"""fp32 ONNX graphs: graph I/O and sessions, calibration text, one parity/drift module, the hand-built
BERT graph, the torch export (and a repository's own graph), and the T5 first decoder step."""
