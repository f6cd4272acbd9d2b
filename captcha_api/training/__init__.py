"""Training tools: synthetic generator, data loading, training, evaluation, export."""
