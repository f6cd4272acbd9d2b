"""Training tools: the network, synthetic generator, data loading, training, evaluation, export, publishing."""
