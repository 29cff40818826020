"""A minimal ONNX model, written out by hand in protobuf wire format.

ir_version 9 (field 1), opset_import {version 17} (field 8), graph {name "g"} (field 7):
`onnx.load` reads it as such a model, and `mlkube fetch --format onnx` must accept it.
The tests that need a model that runs build one with the `onnx` package; these only need
a file that is, structurally, an ONNX model.
"""

MINIMAL_ONNX = bytes([0x08, 0x09, 0x42, 0x02, 0x10, 0x11, 0x3A, 0x03, 0x12, 0x01]) + b"g"
