"""A restricted unpickler for annotation pickles (HO-3D meta): numpy arrays, dtypes and builtins only.

A pickle can name any importable callable; `pickle.load` on an untrusted file executes it. This loader
resolves only the globals needed to rebuild numpy arrays and refuses everything else before it runs.
Allowed callables are also resource bounded: a few bytes of pickle must not allocate terabytes
(`bytes(10**13)`, an ndarray of a huge shape, `tuple(range(10**13))`) nor build a structure whose
memo-shared references expand exponentially when numpy walks it.
"""

from __future__ import annotations

import builtins
import io
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import SkipError
from pipeline.sources.files import ANNOTATION, read_bytes

MAX_ELEMENTS = 10_000_000  # array elements or bytes one allowed call may create
MAX_NODES = 1_000_000  # containers and items visited when walking the result, shared references counted each time
MAX_DEPTH = 64  # container nesting of the result

_NUMPY = {
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
# No range or slice: a lazy range is the seed of every "materialise 10**13 items" bomb.
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray",
             "bool"}


def _bomb(what: str) -> SkipError:
    """An allowed call or structure beyond the resource bounds; load_restricted adds the file name."""
    return SkipError("annotation_resource_bomb", what)


def _bounded_bytes(fn: Callable) -> Callable:
    """bytes(n) / bytearray(n) allocate n zero bytes: refuse an integer n beyond MAX_ELEMENTS."""
    def call(*args: Any) -> Any:
        if args and isinstance(args[0], (int, np.integer)) and abs(int(args[0])) > MAX_ELEMENTS:
            raise _bomb(f"builtins.{fn.__name__}(n) with n above {MAX_ELEMENTS}")
        return fn(*args)

    return call


def _new_ndarray(*args: Any) -> Any:
    """Stands in for `numpy.ndarray`: pickles only name the class as `_reconstruct`'s subtype; a direct
    call (ndarray(shape, dtype)) would allocate an arbitrary shape, so it is refused."""
    raise _bomb("direct numpy.ndarray(...) call")


def _bounded_reconstruct(fn: Callable) -> Callable:
    """numpy's `_reconstruct(subtype, shape, dtype)` allocates `shape` before the state replaces it."""
    def call(subtype: Any, shape: Any, dtype: Any) -> Any:
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) for d in dims) or math.prod(abs(d) for d in dims) > MAX_ELEMENTS:
            raise _bomb("ndarray reconstruct with an unbounded shape")
        return fn(np.ndarray if subtype is _new_ndarray else subtype, shape, dtype)

    return call


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return _new_ndarray
        if (module, name) in _NUMPY:
            if module.startswith("numpy._core") and not hasattr(np, "_core"):
                module = module.replace("numpy._core", "numpy.core")
            found = super().find_class(module, name)
            return _bounded_reconstruct(found) if name == "_reconstruct" else found
        if module in ("builtins", "__builtin__") and name in _BUILTINS:  # __builtin__: Python 2 pickles
            found = getattr(builtins, name)
            return _bounded_bytes(found) if name in ("bytes", "bytearray") else found
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _children(obj: Any) -> list:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return list(obj.ravel())
    return []


def check_structure(obj: Any) -> None:
    """Refuse a result whose walk (as np.asarray would do it) exceeds MAX_NODES items or MAX_DEPTH levels.

    Shared references count once per reference, so a chain of lists that each hold the previous list
    twice is refused after MAX_NODES items instead of costing 2**depth; cycles end the same way. Items
    are counted before they are queued, so the walk itself stays within MAX_NODES entries.
    """
    stack, seen = [(obj, 0)], 1
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _bomb(f"structure nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, np.ndarray) and item.dtype.hasobject and item.size > MAX_NODES:
            raise _bomb(f"object array of more than {MAX_NODES} items")
        children = _children(item)
        seen += len(children)
        if seen > MAX_NODES:
            raise _bomb(f"structure of more than {MAX_NODES} items (counting shared references)")
        stack.extend((child, depth + 1) for child in children)


def load_restricted(path: str | Path) -> Any:
    """Load a pickle with latin1 strings (Python 2 era files); raise SkipError naming the file."""
    data = read_bytes(path, ANNOTATION)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        check_structure(obj)
        return obj
    except SkipError as exc:
        raise SkipError(exc.reason, f"{path}: refused pickle, resource bomb ({exc})") from exc
    except pickle.UnpicklingError as exc:
        if "forbidden global" in str(exc):
            raise SkipError("annotation_forbidden", f"{path}: refused pickle ({exc})") from exc
        raise SkipError("annotation_malformed", f"{path}: malformed pickle ({exc})") from exc
    except MemoryError as exc:
        raise SkipError("annotation_resource_bomb", f"{path}: pickle needs more memory than available") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            RecursionError) as exc:
        raise SkipError("annotation_malformed", f"{path}: malformed pickle ({exc!r})") from exc
