"""MLPerf submission tree writer, compliance tests and checker."""
