"""The sparse-int4 backend: per-vector scaled 4-bit weights and activations, pruned weights."""
