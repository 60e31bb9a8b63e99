"""MANO without chumpy: read the official `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` (v1.2) safely, build `smplx.MANO`
from the arrays, and read 21 keypoints in FreiHAND order.

The official pickles (Python 2, latin1) hold `chumpy.ch.Ch` objects and scipy sparse regressors; chumpy no
longer installs on current Python / NumPy, and `pickle.load` of a downloaded file would run whatever it names.
`load_mano` uses the HO-3D meta reader's restricted unpickler (numpy reconstruction and plain builtins, resource
bounded; `pipeline.sources.safe_pickle`) widened by exactly what a MANO file needs. Those classes are never
imported: inert stand-ins record the state the pickle hands them, and are then turned into arrays:

- `chumpy.ch.Ch` pickles as NEWOBJ + BUILD with its `__dict__` minus caches (`Ch.__getstate__`); the value is
  the ndarray under `'x'` (the term `Ch(array)` sets).
- `chumpy.reordering.Select` holds `a` (a Ch), `idxs` and optionally `preferred_shape`; its value is
  `a.ravel()[idxs].reshape(preferred_shape)` (`Select.compute_r`).
- `scipy.sparse` csc/csr matrices pickle their `__dict__` (`data`, `indices`, `indptr`, `_shape`); they are
  rebuilt through scipy's validating constructor and made dense (the regressors are 16 x 778).
- Protocol 0/1 pickles name `copy_reg._reconstructor(cls, object, None)` instead of NEWOBJ; that form is
  accepted for the stand-ins only.

Every other global is refused before it runs. The licensed files are never shipped: tests and the sample data
use `pipeline.models.mano_synthetic`, which writes the same structure.

Fingertips: MANO has 16 joints; the five tips are mesh vertices whose ids differ by toolkit (`TIP_VERTEX_IDS`).
The choice is the `tips` setting of `mano_joints21`; `DATASET_TIPS` records which one matches each dataset's 3D
labels, and `DEFAULT_TIPS` is FreiHAND's because the FreiHAND and HanCo keypoint labels were made with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import smplx
import torch
from smplx.utils import Struct

from pipeline.errors import ConfigError, SkipError
from pipeline.sources.files import FileKind, MiB, read_bytes
from pipeline.sources.safe_pickle import MAX_DEPTH, MAX_ELEMENTS, _RestrictedUnpickler, check_structure

MANO_FILE = FileKind("mano_model", 64 * MiB)  # the official files are about 4 MB

N_VERTS, N_FACES, N_JOINTS = 778, 1538, 16
REQUIRED_SHAPES = {
    "v_template": (N_VERTS, 3),
    "f": (N_FACES, 3),
    "J_regressor": (N_JOINTS, N_VERTS),
    "weights": (N_VERTS, N_JOINTS),
    "kintree_table": (2, N_JOINTS),
    "shapedirs": (N_VERTS, 3, 10),
    "posedirs": (N_VERTS, 3, 9 * (N_JOINTS - 1)),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
_INTEGER_KEYS = ("f", "kintree_table")

# Fingertip vertex ids, thumb, index, middle, ring, pinky (right hand).
TIP_VERTEX_IDS = {
    "freihand": (744, 320, 443, 555, 672),  # lmb-freiburg/freihand utils/mano_utils.py (kpId2vertices)
    "manopth": (745, 317, 444, 556, 673),  # hassony2/manopth ManoLayer (its left hand uses 445 for the middle tip)
    "ho3d": (744, 333, 444, 555, 672),  # shreyashampali/ho3d setup_mano.py (patched lbs.py) [non-paper]
}
DEFAULT_TIPS = "freihand"
# Which tip ids reproduce each dataset's 21 3D keypoint labels from its MANO fits (HanCo by inference: same group
# and toolkit as FreiHAND; verify). Fine-tuning recipes take the tips of the dataset they evaluate on; the
# pre-training recipes do not use MANO.
DATASET_TIPS = {"freihand": "freihand", "hanco": "freihand", "ho3d": "ho3d"}

# smplx.MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb (MCP, PIP, DIP);
# `mano_joints21` appends the tips as 16 thumb, 17 index, 18 middle, 19 ring, 20 pinky. FreiHAND order is the
# wrist, then thumb, index, middle, ring, pinky, each MCP, PIP, DIP, tip; entry k is the source of keypoint k.
MANO_TO_FREIHAND = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# MD5 of the v1.2 files as checked by the FreiHAND and HO-3D toolkits (setup_mano.py) [non-paper].
OFFICIAL_MD5 = {"fd5a9d35f914987cf1cc04ffe338caa1": "MANO_RIGHT.pkl v1.2",
                "11aeaca8631aa20db964d4eba491e885": "MANO_LEFT.pkl v1.2"}


class _Pickled:
    """Inert stand-in for an allowed class: keeps the state BUILD hands it and runs nothing else."""

    state: dict

    def __new__(cls, *args: Any, **kwargs: Any) -> _Pickled:
        if args or kwargs:
            raise pickle.UnpicklingError(f"{cls.__name__} built with arguments")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).__name__} state is a {type(state).__name__}, not a dict")
        self.state = state


class _Ch(_Pickled):
    """chumpy.ch.Ch"""


class _Select(_Pickled):
    """chumpy.reordering.Select"""


class _Csc(_Pickled):
    """scipy.sparse csc matrix or array"""

    build = scipy.sparse.csc_matrix


class _Csr(_Pickled):
    """scipy.sparse csr matrix or array"""

    build = scipy.sparse.csr_matrix


_CHUMPY = {("chumpy.ch", "Ch"): _Ch, ("chumpy.reordering", "Select"): _Select}
# scipy moved the classes to private modules (scipy.sparse.csc -> scipy.sparse._csc) and added *_array twins.
_SPARSE = {(module, f"{fmt}_{kind}"): cls
           for fmt, cls in (("csc", _Csc), ("csr", _Csr))
           for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}")
           for kind in ("matrix", "array")}
_RECONSTRUCTOR = {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}
_OBJECT = {("__builtin__", "object"), ("builtins", "object")}


def _reconstructor(cls: Any, base: Any, state: Any) -> _Pickled:
    """`copyreg._reconstructor` limited to what protocol 0/1 writes for a plain class: (stand-in, object, None)."""
    if not (isinstance(cls, type) and issubclass(cls, _Pickled)) or base is not object or state is not None:
        raise pickle.UnpicklingError("copy_reg._reconstructor outside the form pickle writes for plain classes")
    return cls.__new__(cls)


class _ManoUnpickler(_RestrictedUnpickler):
    """The annotation allow-list plus the chumpy and scipy.sparse classes a MANO file holds (as stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _CHUMPY:
            return _CHUMPY[key]
        if key in _SPARSE:
            return _SPARSE[key]
        if key in _RECONSTRUCTOR:
            return _reconstructor
        if key in _OBJECT:
            return object
        return super().find_class(module, name)


def _numeric(value: Any, what: str) -> np.ndarray:
    """A real-valued ndarray (or number); object arrays and other types are refused without walking them."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"{what} is a {type(value).__name__}, not a numeric array")
    return value


def _select(state: dict, depth: int) -> np.ndarray:
    base = _as_array(state.get("a"), depth + 1).ravel()
    idxs = _numeric(state.get("idxs"), "Select.idxs")
    if idxs.dtype.kind not in "iu":
        raise pickle.UnpicklingError("Select.idxs is not an integer array")
    out = base[idxs.ravel()]
    return out.reshape(state["preferred_shape"]) if "preferred_shape" in state else out


def _sparse(obj: _Csc | _Csr) -> np.ndarray:
    state = obj.state
    shape = tuple(state.get("_shape", state.get("shape", ())))
    if len(shape) != 2 or not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise pickle.UnpicklingError(f"sparse matrix of shape {shape}")
    parts = [_numeric(state.get(k), f"sparse {k}") for k in ("data", "indices", "indptr")]
    return np.asarray(type(obj).build(tuple(parts), shape=shape).toarray())


def _as_array(obj: Any, depth: int = 0) -> np.ndarray:
    """The array a stand-in stands for; plain arrays pass through."""
    if depth > MAX_DEPTH:
        raise pickle.UnpicklingError(f"chumpy objects nested deeper than {MAX_DEPTH}")
    if isinstance(obj, _Ch):
        return _numeric(obj.state.get("x"), "Ch.x")
    if isinstance(obj, _Select):
        return _select(obj.state, depth)
    if isinstance(obj, (_Csc, _Csr)):
        return _sparse(obj)
    if isinstance(obj, _Pickled):  # built by _reconstructor but never given a state
        raise pickle.UnpicklingError(f"{type(obj).__name__} without state")
    return obj


def _unpickle(data: bytes, path: Path) -> dict:
    """The top-level dict with every stand-in replaced by its array; ConfigError naming the file otherwise."""
    try:
        raw = _ManoUnpickler(io.BytesIO(data), encoding="latin1").load()
        if not isinstance(raw, dict):
            raise pickle.UnpicklingError(f"top level is a {type(raw).__name__}, not a dict")
        model = {str(k): _as_array(v) for k, v in raw.items()}
        check_structure(model)
        return model
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{path}: refused MANO pickle ({exc})") from exc
    except MemoryError as exc:
        raise ConfigError(f"{path}: MANO pickle needs more memory than available") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
            RecursionError) as exc:
        raise ConfigError(f"{path}: malformed MANO pickle ({exc!r})") from exc


def _check_array(model: Mapping[str, Any], key: str, where: str) -> None:
    if key not in model:
        raise ConfigError(f"{where}: MANO key {key!r} is missing")
    value, shape = model[key], REQUIRED_SHAPES[key]
    kinds, expected = ("iu", "an integer") if key in _INTEGER_KEYS else ("iuf", "a real-valued")
    if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
        got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise ConfigError(f"{where}: MANO key {key!r} is {got}, expected {expected} array of shape {shape}")
    if value.shape != shape:
        raise ConfigError(f"{where}: MANO key {key!r} has shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ConfigError(f"{where}: MANO key {key!r} holds NaN or infinite values")


def _check_topology(model: Mapping[str, np.ndarray], where: str) -> None:
    """Face indices within the mesh and parents before children: what lbs indexes without checking."""
    faces = model["f"]
    if faces.min() < 0 or faces.max() >= N_VERTS:
        raise ConfigError(f"{where}: MANO key 'f' indexes vertices outside 0..{N_VERTS - 1}")
    parents = model["kintree_table"][0, 1:].astype(np.int64)
    if not all(0 <= p < j for j, p in enumerate(parents, start=1)):
        raise ConfigError(f"{where}: MANO key 'kintree_table' does not list each joint's parent before it")


def validate_mano(model: Mapping[str, Any], where: str = "MANO model") -> None:
    """Raise ConfigError naming the key when an array smplx reads is missing, of the wrong shape or kind,
    non-finite, or indexes outside the mesh / joint tree."""
    for key in REQUIRED_SHAPES:
        _check_array(model, key, where)
    _check_topology(model, where)


def load_mano(path: str | Path) -> dict[str, Any]:
    """The entries of a MANO model pickle, chumpy and sparse objects as dense NumPy arrays, validated."""
    path = Path(path)
    try:
        data = read_bytes(path, MANO_FILE)
    except SkipError as exc:
        raise ConfigError(f"MANO model: {exc}") from exc
    model = _unpickle(data, path)
    validate_mano(model, str(path))
    return model


def build_mano_layer(model: str | Path | Mapping[str, Any], *, flat_hand_mean: bool, side: str = "right",
                     use_pca: bool = False, num_pca_comps: int = 45, batch_size: int = 1) -> smplx.MANO:
    """`smplx.MANO` from a model file or `load_mano` arrays, full 45-D articulation unless `use_pca`.

    `flat_hand_mean` has no default: datasets differ (FreiHAND and HanCo False, HO-3D True) and the shards record
    it per clip (`mano_flat_hand_mean`). `side` only sets smplx's `is_rhand`; the arrays must be that hand's.
    smplx reads everything from `data_struct`; `model_path` is kept only for its messages.
    """
    if side not in ("right", "left"):
        raise ConfigError(f"MANO side must be 'right' or 'left', got {side!r}")
    if isinstance(model, Mapping):
        arrays, path = model, ""
        validate_mano(arrays)
    else:
        arrays, path = load_mano(model), str(model)
    struct = Struct(**{key: arrays[key] for key in REQUIRED_SHAPES})
    # smplx prints a warning for every model with fewer than 300 shape components, i.e. for every MANO file.
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.MANO(path, is_rhand=side == "right", data_struct=struct, use_pca=use_pca,
                          num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean, batch_size=batch_size)


def tip_vertex_ids(tips: str) -> tuple[int, ...]:
    """Vertex ids of the thumb, index, middle, ring and pinky tips under the named convention."""
    if tips not in TIP_VERTEX_IDS:
        raise ConfigError(f"MANO tips must be one of {sorted(TIP_VERTEX_IDS)}, got {tips!r}")
    return TIP_VERTEX_IDS[tips]


def mano_joints21(output: Any, tips: str = DEFAULT_TIPS) -> torch.Tensor:
    """[B, 21, 3] keypoints in FreiHAND order from a `smplx.MANO` output: its 16 joints (the first 16, should a
    smplx version append its own tips) plus the five tip vertices of the `tips` convention."""
    if output.joints.shape[1] < N_JOINTS:
        raise ValueError(f"a MANO output has {N_JOINTS} joints, got {output.joints.shape[1]}")
    tip_verts = output.vertices[:, list(tip_vertex_ids(tips))]
    return torch.cat([output.joints[:, :N_JOINTS], tip_verts], dim=1)[:, list(MANO_TO_FREIHAND)]


def template_checksum(model: Mapping[str, Any]) -> str:
    """SHA-256 of v_template as little-endian float64: the same number for the same mesh in any file format."""
    return hashlib.sha256(np.ascontiguousarray(model["v_template"], dtype="<f8").tobytes()).hexdigest()


def file_md5(path: str | Path) -> str:
    """MD5 of the file's bytes, comparable with `OFFICIAL_MD5`."""
    return hashlib.md5(read_bytes(path, MANO_FILE)).hexdigest()
