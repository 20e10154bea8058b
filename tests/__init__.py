"""sparseperf test suite."""
