"""Shipping engines where they are served: Triton model repositories and ONNX Runtime EPContext models.

A stage: it reads the catalog (lookup's rules choose the engine per compute capability), copies
hash-checked plans, and writes the glue a server needs (``config.pbtxt``, an EPContext ONNX model).
Nothing here imports tensorrt, onnx or onnxruntime: the files are written as text and protobuf bytes.
"""

from __future__ import annotations

import os


def default_mode(directory: bool = False) -> int:
    """The mode a new file (or directory) gets under the umask: servers run as other users, while
    temp files are created private (0600/0700) and keep that mode when renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask
