"""The language model side: Granite-4.0-H presets, corpora and batches, the loss, kernels, hub access."""
