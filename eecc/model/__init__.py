"""The model boundary: ONNX in and out (ir) and its analysis into blocks, costs and candidate exits."""
