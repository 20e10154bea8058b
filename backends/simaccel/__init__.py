"""The simulated accelerator: a timing model of a device over the sparse-int4 numerics."""
