"""Reading a checkpoint: its files, its family's conventions, the hub, split packages, transformers loading.

The lowest layer of the engine: nothing here imports the ONNX, quantisation or runtime layers.
"""
