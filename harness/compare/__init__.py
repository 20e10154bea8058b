"""``sparseperf compare`` and ``report``: backend matrices, their tables, plots and regressions."""
