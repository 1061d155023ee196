"""The measured cost model: what a segment of a model costs on a processor, fitted from TVM + QEMU counts."""
