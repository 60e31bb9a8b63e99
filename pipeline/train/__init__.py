"""Pre-training: typed config, effective-batch arithmetic, gradient caching over gathered embeddings, optimisers,
checkpoints and the Accelerate loop."""
