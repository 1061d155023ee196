"""The bundle: stage ONNX files, the single-file model and manifest.json written to a folder."""
