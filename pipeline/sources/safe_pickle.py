"""A restricted unpickler for annotation pickles (HO-3D meta): numpy arrays, dtypes and builtins only.

A pickle can name any importable callable; `pickle.load` on an untrusted file executes it. This loader
resolves only the globals needed to rebuild numpy arrays and refuses everything else before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import AnnotationError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes (pure function)
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
             "bytearray", "bool", "slice", "range"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            if module.startswith("numpy._core") and not hasattr(np, "_core"):
                module = module.replace("numpy._core", "numpy.core")
            return super().find_class(module, name)
        if module == "builtins" and name in _BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def load_restricted(path: str | Path) -> Any:
    """Load a pickle with latin1 strings (Python 2 era files); raise AnnotationError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AnnotationError("annotation_missing", f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        if "forbidden global" in str(exc):
            raise AnnotationError("annotation_forbidden", f"{path}: refused pickle ({exc})") from exc
        raise AnnotationError("annotation_malformed", f"{path}: malformed pickle ({exc})") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise AnnotationError("annotation_malformed", f"{path}: malformed pickle ({exc!r})") from exc
