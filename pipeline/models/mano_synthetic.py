"""A procedural MANO-format hand (not the licensed model) and a writer with the official pickle's structure.

The licensed `MANO_RIGHT.pkl` cannot be shipped, yet tests and `handclr sample-data` need a MANO file that runs
end to end. `synthetic_mano_arrays` builds one with MANO's keys, shapes, dtypes and topology counts: 778 vertices,
1538 faces forming one oriented surface whose only opening is a 16-vertex loop at the wrist (the counts force
that: F = 2V - 2 - 16). The surface is a palm box (a lattice, 13 x 6 x 4 cells) with five finger tubes glued into
holes of its faces, along MANO's 16-joint tree; skinning weights go to the nearest bone; the regressor averages
the eight vertices nearest each joint; shape and pose blend shapes are small and random. Every fingertip vertex
id of `pipeline.models.mano.TIP_VERTEX_IDS` sits at its finger's tip, so any tip convention gives plausible
21-joint hands.

`write_mano_like` pickles such arrays the way the official file is pickled: v_template, shapedirs and posedirs
as `chumpy.ch.Ch` objects (a stand-in class registered as `chumpy.ch` only while pickling, reproducing chumpy's
NEWOBJ + state-dict form), J_regressor as a scipy csc matrix, protocol 2.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from pipeline.models.mano import DEFAULT_TIPS, N_FACES, N_JOINTS, N_VERTS, TIP_VERTEX_IDS

CH_KEYS = ("v_template", "shapedirs", "posedirs")  # chumpy objects in the official file
SPARSE_KEYS = ("J_regressor",)  # scipy.sparse.csc_matrix in the official file
ROOT_PARENT = 4294967295  # how the official kintree_table spells "no parent" (uint32 -1)
PARENTS = (0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)  # of joints 1..15 (index, middle, pinky, ring, thumb)
N_HAND_COEFFS = 1554  # rows of hands_coeffs (per-scan PCA coefficients); any count loads the same

_CELLS = (13, 6, 4)  # palm lattice cells along x (width), y (wrist to knuckles), z (palm to back)
_CELL = np.array([0.0065, 0.015, 0.0075])  # metres per cell
_ORIGIN = np.array([-0.04225, 0.0, -0.015])  # position of lattice point (0, 0, 0); wrist at y = 0
_QUAD = ((0, 0), (1, 0), (1, 1), (0, 1))
_REGRESSOR_VERTS = 8


@dataclass(frozen=True)
class _Hole:
    """Cells removed from one face of the palm box: the face normal to `axis` at lattice 0 (side 0) or at the
    far end (side 1); `ranges` gives the removed cells [lo, hi) along the face's two other axes."""

    axis: int
    side: int
    ranges: Mapping[int, tuple[int, int]]

    def covers(self, axis: int, side: int, cell: Mapping[int, int]) -> bool:
        return (axis, side) == (self.axis, self.side) and all(lo <= cell[a] < hi for a, (lo, hi) in self.ranges.items())


@dataclass(frozen=True)
class _Finger:
    """A tube glued into `hole`, along `direction`, `rings` rings plus an apex vertex at `length`."""

    joints: tuple[int, int, int]  # MANO joints along the finger (MCP, PIP, DIP; thumb CMC, MCP, IP)
    at: tuple[float, float, float]  # their positions as fractions of `length` from the hole (< 0: inside the palm)
    tip: int  # position in the thumb, index, middle, ring, pinky order of tip ids
    hole: _Hole
    direction: tuple[float, float, float]
    length: float
    radius: float
    rings: int


_WRIST = _Hole(1, 0, {0: (3, 9), 2: (1, 3)})  # 6 x 2 cells: a 16-vertex loop
_LONG = (0.0, 0.45, 0.75)
# Ring counts make 301 palm + 8 * (13 + 14 + 13 + 10) + 6 * 12 + 5 apex vertices = 778.
_FINGERS = (
    _Finger((13, 14, 15), (-0.35, 0.3, 0.65), 0, _Hole(0, 0, {1: (1, 3), 2: (1, 2)}), (-1.0, 0.9, -0.6), 0.065,
            0.0095, 12),
    _Finger((1, 2, 3), _LONG, 1, _Hole(1, 1, {0: (1, 3), 2: (1, 3)}), (-0.08, 1.0, 0.0), 0.078, 0.0085, 13),
    _Finger((4, 5, 6), _LONG, 2, _Hole(1, 1, {0: (4, 6), 2: (1, 3)}), (0.0, 1.0, 0.0), 0.085, 0.0088, 14),
    _Finger((10, 11, 12), _LONG, 3, _Hole(1, 1, {0: (7, 9), 2: (1, 3)}), (0.06, 1.0, 0.0), 0.080, 0.0084, 13),
    _Finger((7, 8, 9), _LONG, 4, _Hole(1, 1, {0: (10, 12), 2: (1, 3)}), (0.15, 1.0, 0.0), 0.064, 0.0075, 10),
)


def _face_axes(axis: int, side: int) -> tuple[int, int]:
    """The face's in-plane lattice axes (u, v), ordered so that u x v is the outward normal."""
    u, v = (axis + 1) % 3, (axis + 2) % 3
    return (u, v) if side else (v, u)


def _lattice_point(axis: int, side: int, coords: Mapping[int, int]) -> tuple[int, int, int]:
    point = [0, 0, 0]
    point[axis] = _CELLS[axis] * side
    for a, c in coords.items():
        point[a] = c
    return point[0], point[1], point[2]


def _palm_quads(holes: list[_Hole]) -> list[tuple]:
    """Outward-facing lattice quads (counter-clockwise seen from outside) of the box surface minus the holes."""
    quads = []
    for axis in range(3):
        for side in (0, 1):
            u, v = _face_axes(axis, side)
            for cu in range(_CELLS[u]):
                for cv in range(_CELLS[v]):
                    if not any(h.covers(axis, side, {u: cu, v: cv}) for h in holes):
                        quads.append(tuple(_lattice_point(axis, side, {u: cu + du, v: cv + dv}) for du, dv in _QUAD))
    return quads


def _hole_loop(hole: _Hole) -> list[tuple[int, int, int]]:
    """The hole's boundary lattice points, counter-clockwise seen from outside (the removed cells' winding)."""
    u, v = _face_axes(hole.axis, hole.side)
    (u0, u1), (v0, v1) = hole.ranges[u], hole.ranges[v]
    walk = ([(a, v0) for a in range(u0, u1)] + [(u1, b) for b in range(v0, v1)]
            + [(a, v1) for a in range(u1, u0, -1)] + [(u0, b) for b in range(v1, v0, -1)])
    return [_lattice_point(hole.axis, hole.side, {u: a, v: b}) for a, b in walk]


class _Mesh:
    """Vertices and triangles as they are added; lattice points are shared between the palm and the tubes."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.faces: list[tuple[int, int, int]] = []
        self._lattice: dict[tuple, int] = {}

    def add(self, xyz: np.ndarray) -> int:
        self.verts.append(np.asarray(xyz, dtype=np.float64))
        return len(self.verts) - 1

    def lattice(self, point: tuple) -> int:
        if point not in self._lattice:
            self._lattice[point] = self.add(_ORIGIN + np.asarray(point) * _CELL)
        return self._lattice[point]

    def quad(self, a: int, b: int, c: int, d: int) -> None:
        self.faces += [(a, b, c), (a, c, d)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ring_heights(finger: _Finger) -> np.ndarray:
    return finger.length * np.arange(1, finger.rings + 1) / (finger.rings + 1)


def _ring_radii(finger: _Finger, heights: np.ndarray) -> np.ndarray:
    """Tapering by a quarter towards the tip, rounded over the last `radius` of the length."""
    cap = np.clip((heights - (finger.length - finger.radius)) / finger.radius, 0.0, 1.0)
    return finger.radius * (1 - 0.25 * heights / finger.length) * np.sqrt(1 - cap**2)


def _add_finger(mesh: _Mesh, finger: _Finger) -> tuple[int, list[int]]:
    """Glue the tube to its hole loop; return the apex vertex and the last ring."""
    lower = [mesh.lattice(p) for p in _hole_loop(finger.hole)]
    loop = np.array([mesh.verts[i] for i in lower])
    centre, axis = loop.mean(axis=0), _unit(np.asarray(finger.direction))
    spokes = _unit(loop - centre)
    heights = _ring_heights(finger)
    for h, r in zip(heights, _ring_radii(finger, heights), strict=True):
        upper = [mesh.add(centre + axis * h + r * s) for s in spokes]
        for m in range(len(lower)):
            n = (m + 1) % len(lower)
            mesh.quad(lower[m], lower[n], upper[n], upper[m])
        lower = upper
    apex = mesh.add(centre + axis * finger.length)
    mesh.faces += [(lower[m], lower[(m + 1) % len(lower)], apex) for m in range(len(lower))]
    return apex, lower


def _design_joints(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions (16, 3) and fingertip points (5, 3): the wrist at the wrist loop's centre, finger joints
    on the tube axis at their fractions of the length (the positive ones moved to the nearest ring)."""
    joints, tips = np.zeros((N_JOINTS, 3)), np.zeros((5, 3))
    joints[0] = np.mean([mesh.verts[mesh.lattice(p)] for p in _hole_loop(_WRIST)], axis=0)
    for finger in _FINGERS:
        centre = np.mean([mesh.verts[mesh.lattice(p)] for p in _hole_loop(finger.hole)], axis=0)
        axis, heights = _unit(np.asarray(finger.direction)), _ring_heights(finger)
        for joint, frac in zip(finger.joints, finger.at, strict=True):
            h = frac * finger.length
            joints[joint] = centre + axis * (heights[np.abs(heights - h).argmin()] if h > 0 else h)
        tips[finger.tip] = centre + axis * finger.length
    return joints, tips


def _tip_order(apexes: list[int], last_rings: list[list[int]]) -> np.ndarray:
    """A vertex permutation (new id -> built vertex) putting every convention's tip id at its finger's tip:
    the default convention's id on the apex, the others on the last ring; other vertices keep their order."""
    wanted, built = [], []
    for finger in _FINGERS:
        default = TIP_VERTEX_IDS[DEFAULT_TIPS][finger.tip]
        others = sorted({ids[finger.tip] for ids in TIP_VERTEX_IDS.values()} - {default})
        wanted += [default, *others]
        built += [apexes[finger.tip], *last_rings[finger.tip][:len(others)]]
    order = np.empty(N_VERTS, dtype=np.int64)
    order[wanted] = built
    order[np.setdiff1d(np.arange(N_VERTS), wanted)] = np.setdiff1d(np.arange(N_VERTS), built)
    return order


def _hand_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (778, 3), faces (1538, 3), design joints (16, 3) and fingertip points (5, 3)."""
    mesh = _Mesh()
    for quad in _palm_quads([_WRIST] + [f.hole for f in _FINGERS]):
        mesh.quad(*(mesh.lattice(p) for p in quad))
    apexes, last_rings = [0] * 5, [[]] * 5
    for finger in _FINGERS:
        apexes[finger.tip], last_rings[finger.tip] = _add_finger(mesh, finger)
    joints, tips = _design_joints(mesh)
    verts, faces = np.array(mesh.verts), np.array(mesh.faces)
    assert verts.shape == (N_VERTS, 3) and faces.shape == (N_FACES, 3), "counts are fixed by _FINGERS"
    order = _tip_order(apexes, last_rings)
    return verts[order], np.argsort(order)[faces], joints, tips


def _segment_distances(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[P, S] distances from points to line segments."""
    d, seg = points[:, None] - starts[None], (ends - starts)[None]
    t = np.clip((d * seg).sum(-1) / (seg * seg).sum(-1), 0.0, 1.0)
    return np.linalg.norm(d - t[..., None] * seg, axis=-1)


def _skinning_weights(verts: np.ndarray, joints: np.ndarray, tips: np.ndarray) -> np.ndarray:
    """One-hot (778, 16): each vertex follows the joint whose bone (joint -> child, or -> tip) is nearest."""
    owners, starts, ends = [], [], []
    children = {j: [c for c, p in enumerate(PARENTS, start=1) if p == j] for j in range(N_JOINTS)}
    leaf_tip = {f.joints[-1]: f.tip for f in _FINGERS}
    for j in range(N_JOINTS):
        targets = [joints[c] for c in children[j]] or [tips[leaf_tip[j]]]
        owners += [j] * len(targets)
        starts += [joints[j]] * len(targets)
        ends += targets
    nearest = _segment_distances(verts, np.array(starts), np.array(ends)).argmin(axis=1)
    return np.eye(N_JOINTS)[np.array(owners)[nearest]]


def _regressor(verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(16, 778): each joint is the mean of the vertices nearest its design position."""
    nearest = np.argsort(np.linalg.norm(verts[None] - joints[:, None], axis=-1), axis=1)[:, :_REGRESSOR_VERTS]
    regressor = np.zeros((N_JOINTS, N_VERTS))
    np.put_along_axis(regressor, nearest, 1.0 / _REGRESSOR_VERTS, axis=1)
    return regressor


def synthetic_mano_arrays(seed: int = 0) -> dict[str, Any]:
    """A hand-shaped model with the official file's keys, shapes and dtypes (dense arrays; see write_mano_like).
    The mesh is fixed; `seed` draws the blend shapes and the pose PCA."""
    rng = np.random.default_rng(seed)
    verts, faces, joints, tips = _hand_mesh()
    weights = _skinning_weights(verts, joints, tips)
    regressor = _regressor(verts, joints)
    shapedirs = np.einsum("vj,jdc->vdc", weights, rng.normal(0.0, 0.002, (N_JOINTS, 3, 10)))
    shapedirs[:, :, 0] += 0.05 * (verts - regressor[0] @ verts)  # beta 0 scales the hand about the wrist
    components = np.linalg.qr(rng.normal(size=(45, 45)))[0]
    return {
        "hands_components": components,
        "f": faces.astype(np.uint32),
        "J_regressor": regressor,
        "kintree_table": np.array([(ROOT_PARENT, *PARENTS), tuple(range(N_JOINTS))], dtype=np.int64),
        "J": regressor @ verts,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(size=(N_HAND_COEFFS, 45)) @ components,
        "weights": weights,
        "betas": np.zeros(10),
        "hands_mean": rng.normal(0.0, 0.15, 45),
        "shapedirs": shapedirs,
        "posedirs": rng.normal(0.0, 1e-4, (N_VERTS, 3, 9 * (N_JOINTS - 1))),
        "v_template": verts,
        "bs_type": "lrotmin",
    }


@contextlib.contextmanager
def _chumpy_standin() -> Iterator[type]:
    """A throwaway `chumpy.ch` module in sys.modules whose `Ch` pickles as chumpy's does; removed on exit."""
    names = ("chumpy", "chumpy.ch")
    saved = {name: sys.modules[name] for name in names if name in sys.modules}

    class Ch:
        """chumpy.ch.Ch(array): pickled as NEWOBJ, then BUILD with __dict__ minus _parents and _cache."""

        def __init__(self, x: np.ndarray) -> None:
            self.__dict__.update(_dirty_vars={"x"}, _itr=None, _make_dense=False, _make_sparse=False,
                                 _depends_on_deps={}, x=np.asarray(x, dtype=np.float64))

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    module.Ch, package.ch = Ch, module
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        for name in names:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


def write_mano_like(path: str | Path, arrays: Mapping[str, Any], protocol: int = 2) -> Path:
    """Pickle `arrays` as the official MANO file holds them: CH_KEYS as chumpy Ch objects, SPARSE_KEYS as
    scipy csc matrices, the rest as given; protocol 2 like the Python 2 original (0 and 1 use copy_reg)."""
    with _chumpy_standin() as ch:
        model = {key: ch(value) if key in CH_KEYS else scipy.sparse.csc_matrix(value) if key in SPARSE_KEYS
                 else value for key, value in arrays.items()}
        data = pickle.dumps(model, protocol=protocol)
    path = Path(path)
    path.write_bytes(data)
    return path


def write_synthetic_mano(path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write the synthetic model as a MANO_RIGHT.pkl-like file (for sample data); return its arrays."""
    arrays = synthetic_mano_arrays(seed)
    write_mano_like(path, arrays)
    return arrays
