"""Running a graph or a torch model over batches: the backends, the engine, the encoder rankers' base."""
