"""The floor every layer stands on: user-facing errors, file utilities and file formats.

Nothing here knows what a recipe, a store or TensorRT is: errors (one line and a hint), atomic
writes and locked temp files, bounded YAML, the ONNX protobuf and plan headers as bytes, paths
written in recipes, and the test-only crash points. Imports nothing else from trtforge.
"""
