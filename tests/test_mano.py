"""MANO without chumpy: a model written at test time with the official pickle's structure (chumpy-style objects
from a stand-in class defined only while pickling, a sparse regressor), checked against references computed
here in NumPy, never through smplx or the loader."""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import pickletools
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.models.mano import (
    DATASET_TIPS,
    DEFAULT_TIPS,
    TIP_VERTEX_IDS,
    build_mano_layer,
    load_mano,
    mano_joints21,
)
from pipeline.models.mano_synthetic import synthetic_mano_arrays, write_mano_like

# FreiHAND order: wrist, then per finger MCP, PIP, DIP, tip. MANO joints of each finger and its tip's position in
# the tip tuples (thumb, index, middle, ring, pinky).
FINGERS = (("thumb", (13, 14, 15), 0), ("index", (1, 2, 3), 1), ("middle", (4, 5, 6), 2), ("ring", (10, 11, 12), 3),
           ("pinky", (7, 8, 9), 4))


@pytest.fixture(scope="module")
def arrays() -> dict:
    return synthetic_mano_arrays(seed=0)


@pytest.fixture(scope="module")
def model_file(arrays, tmp_path_factory):
    return write_mano_like(tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl", arrays)


@pytest.fixture(scope="module")
def layer(model_file):
    return build_mano_layer(model_file, flat_hand_mean=True)


def _globals(data: bytes) -> set[str]:
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def _rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(axis_angle)
    kx, ky, kz = axis_angle / angle
    k = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.mark.parametrize("protocol", [2, 0])
def test_official_structure_loads_without_chumpy(arrays, tmp_path, protocol):
    path = write_mano_like(tmp_path / "MANO_RIGHT.pkl", arrays, protocol=protocol)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules  # the stand-in lived only while pickling
    found = _globals(path.read_bytes())
    assert "chumpy.ch Ch" in found and any("csc_matrix" in g for g in found)
    model = load_mano(path)
    assert set(model) == set(arrays)
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            assert model[key].dtype == value.dtype and np.array_equal(model[key], value), key
        else:
            assert model[key] == value


def test_zero_pose_joints_are_the_regressed_template(arrays, layer):
    with torch.no_grad():
        out = layer()
    reference = arrays["J_regressor"] @ arrays["v_template"]
    np.testing.assert_allclose(out.joints[0].numpy(), reference, atol=1e-6)
    np.testing.assert_allclose(out.vertices[0].numpy(), arrays["v_template"], atol=1e-6)


def test_global_rotation_rotates_every_vertex_about_the_root(arrays, layer):
    axis_angle = np.array([0.4, -1.1, 0.7])
    with torch.no_grad():
        out = layer(global_orient=torch.tensor(axis_angle[None], dtype=torch.float32))
    root = arrays["J_regressor"][0] @ arrays["v_template"]
    rot = _rodrigues(axis_angle)
    expected = (arrays["v_template"] - root) @ rot.T + root
    np.testing.assert_allclose(out.vertices[0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), (arrays["J"] - root) @ rot.T + root, atol=1e-5)


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_forbidden_globals_are_refused_without_running(arrays, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({**arrays, "v_template": _System(f"touch {marker}")}, protocol=2))
    with pytest.raises(ConfigError, match=r"evil\.pkl: refused MANO pickle \(forbidden global (os|posix|nt)\.system"):
        load_mano(evil)
    assert not marker.exists()
    unknown = tmp_path / "ops.pkl"  # a chumpy class other than Ch / Select
    unknown.write_bytes(b"(dp0\nVx\ncchumpy.ch_ops\nadd\n(tRs.")
    with pytest.raises(ConfigError, match=r"ops\.pkl: .*forbidden global chumpy\.ch_ops\.add"):
        load_mano(unknown)


def test_chumpy_select_becomes_the_indexed_array(arrays, tmp_path, monkeypatch):
    chumpy, ch, reordering = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))
    for module, name in ((ch, "Ch"), (reordering, "Select")):
        setattr(module, name, type(name, (), {"__module__": module.__name__, "__qualname__": name}))
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    source = ch.Ch()
    source.__dict__.update(x=np.arange(90.0) / 100, _dirty_vars={"x"}, _itr=None)
    select = reordering.Select()
    select.__dict__.update(a=source, idxs=np.arange(89, -1, -2), preferred_shape=(45,), _dirty_vars=set())
    model = {**arrays, "hands_mean": select, "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"])}
    path = tmp_path / "select.pkl"
    path.write_bytes(pickle.dumps(model, protocol=2))
    np.testing.assert_array_equal(load_mano(path)["hands_mean"], np.arange(89, -1, -2) / 100)


@pytest.mark.parametrize("tips", sorted(TIP_VERTEX_IDS))
def test_21_joints_in_freihand_order(layer, tips):
    torch.manual_seed(0)
    with torch.no_grad():
        out = layer(global_orient=0.3 * torch.randn(1, 3), hand_pose=0.3 * torch.randn(1, 45))
    j21, joints, verts = mano_joints21(out, tips)[0], out.joints[0], out.vertices[0]
    assert j21.shape == (21, 3) and torch.equal(j21[0], joints[0])
    for i, (_, mano_ids, tip) in enumerate(FINGERS):
        assert torch.equal(j21[1 + 4 * i:4 + 4 * i], joints[list(mano_ids)])
        assert torch.equal(j21[4 + 4 * i], verts[TIP_VERTEX_IDS[tips][tip]])


def test_tip_conventions_and_synthetic_tips(layer):
    assert TIP_VERTEX_IDS["freihand"] == (744, 320, 443, 555, 672)
    assert TIP_VERTEX_IDS["manopth"] == (745, 317, 444, 556, 673)
    assert set(DATASET_TIPS.values()) <= set(TIP_VERTEX_IDS) and DEFAULT_TIPS in TIP_VERTEX_IDS
    with torch.no_grad():
        out = layer()
    for tips in TIP_VERTEX_IDS:  # every convention's tips sit at the synthetic fingers' ends
        j21 = mano_joints21(out, tips)[0]
        for i in range(5):
            dip, tip = j21[3 + 4 * i], j21[4 + 4 * i]
            assert (tip - j21[0]).norm() > (dip - j21[0]).norm() + 0.005, (tips, FINGERS[i][0])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("v_template", np.zeros((777, 3)), r"'v_template' has shape \(777, 3\), expected \(778, 3\)"),
    ("J_regressor", np.zeros((15, 778)), r"'J_regressor' has shape \(15, 778\), expected \(16, 778\)"),
    ("posedirs", None, r"'posedirs' is missing"),
    ("f", np.zeros((1538, 3)), r"'f' is float64, expected an integer array"),
    ("f", np.full((1538, 3), 778, dtype=np.uint32), r"'f' indexes vertices outside"),
    ("weights", np.full((778, 16), np.nan), r"'weights' holds NaN"),
])
def test_wrong_arrays_name_the_key(arrays, tmp_path, key, value, message):
    broken = {k: v for k, v in arrays.items() if k != key}
    if value is not None:
        broken[key] = value
    path = write_mano_like(tmp_path / "MANO_RIGHT.pkl", broken)
    with pytest.raises(ConfigError, match=r"MANO_RIGHT\.pkl: MANO key " + message):
        load_mano(path)
    with pytest.raises(ConfigError, match=message):
        build_mano_layer(broken, flat_hand_mean=True)


def test_synthetic_model_is_one_oriented_surface_open_at_the_wrist(arrays):
    faces = arrays["f"].astype(np.int64)
    assert faces.shape == (1538, 3) and faces.min() == 0 and faces.max() == 777
    assert all(len(set(face)) == 3 for face in faces.tolist())
    directed = collections.Counter((a, b) for face in faces.tolist() for a, b in zip(face, face[1:] + face[:1],
                                                                                      strict=True))
    assert max(directed.values()) == 1  # consistently oriented, no edge shared by more than two faces
    boundary = [edge for edge in directed if edge[::-1] not in directed]
    assert len(boundary) == 16 and np.ptp(arrays["v_template"][np.array(boundary)][..., 1]) == 0  # the wrist loop
    np.testing.assert_array_equal(arrays["weights"].sum(axis=1), 1.0)
    np.testing.assert_allclose(arrays["J_regressor"].sum(axis=1), 1.0)


def test_mano_check_cli(arrays, model_file, tmp_path, capsys):
    assert main(["mano-check", str(model_file), "--tips", "manopth"]) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(arrays["v_template"].astype("<f8").tobytes()).hexdigest() in out
    assert "v_template        (778, 3)" in out and "tips=manopth: 21 joints span" in out
    assert main(["mano-check", str(tmp_path / "absent.pkl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "absent.pkl: missing" in err and "\n" not in err
