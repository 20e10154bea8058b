"""Datasets: official-layout loaders, preprocessing caches and synthetic generators."""
