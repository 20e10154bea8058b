"""sparseperf engine: CLI, run orchestration, LoadGen glue, models, datasets, accuracy, reports."""
