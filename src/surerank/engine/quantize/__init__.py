"""int8 graphs from fp32 ones: dynamic int8, outlier channels, the projection search, one recipe table."""
