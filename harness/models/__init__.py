"""Model definitions: built-in ONNX builders and loaders for official files."""
