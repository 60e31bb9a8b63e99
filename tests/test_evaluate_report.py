"""Evaluation outputs: results.json, the Markdown comparison with the published numbers, the PNG figures and the
HO-3D challenge submission (round trip through the HO-3D reader's own label conversion)."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from pipeline.evaluate import (
    evaluate_predictions,
    frame_id,
    markdown_report,
    plot_error_vs_time,
    plot_pck,
    plot_per_joint,
    published_table,
    to_ho3d,
    write_results,
    write_submission,
)
from pipeline.evaluate.plots import JOINT_NAMES, error_vs_time_figure, per_joint_figure
from pipeline.evaluate.report import PAPER_METRICS, PUBLISHED
from pipeline.geometry import OPENGL_TO_OPENCV
from pipeline.sources import SOURCES
from pipeline.sources.base import Clip, Frame

CONTEXT = {"dataset": "ho3d", "split": "train", "crops": "gt_box", "gt_root": False, "gt_scale": False,
           "model": "rn18-tempclr", "checkpoint": "runs/x/step-100", "data": "sample data"}


def _hands(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ours: OpenCV camera frame (z > 0, in front of the camera), metres."""
    centre = np.array([0.02, -0.01, 0.5])
    return (centre + rng.normal(0, 0.04, (n, 21, 3)), centre + rng.normal(0, 0.04, (n, 778, 3)))


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- HO-3D submission ---------------------------------------------------------------------------------------------

def test_to_ho3d_is_the_exact_inverse_of_the_ho3d_reader(tmp_path):
    """ours -> HO-3D -> the reader's own annotate() gives ours back bit for bit (float64 pickles)."""
    rng = np.random.default_rng(0)
    joints, verts = _hands(rng, 4)
    h_joints, h_verts = to_ho3d(joints, verts)
    source = SOURCES["ho3d"](tmp_path, fps=30)
    clip = Clip("ho3d", "train_ABF10", 0, "right", 30.0, [], flags={"split": "train", "version": 3})
    K = np.array([[615.0, 0, 320.0], [0, 615.0, 240.0], [0, 0, 1]])
    for i, h in enumerate(h_joints):
        meta = {"handJoints3D": h, "camMat": K, "handPose": np.zeros(48), "handBeta": np.zeros(10)}
        (tmp_path / f"{i}.pkl").write_bytes(pickle.dumps(meta, protocol=2))
        frame = Frame(f"train/ABF10/rgb/{i:04d}.jpg", i, annotation=str(tmp_path / f"{i}.pkl"))
        source.annotate(clip, frame)
        np.testing.assert_array_equal(frame.labels.kp3d, joints[i])
    np.testing.assert_array_equal(h_verts @ OPENGL_TO_OPENCV.T, verts)  # vertices: the flip only, same order
    # HO-3D order: wrist, index/middle/pinky/ring/thumb MCP-PIP-DIP, then the tips thumb .. pinky; y and z flipped.
    flip = np.array([1.0, -1.0, -1.0])
    for ho3d_index, ours_index in ((0, 0), (1, 5), (4, 9), (7, 17), (10, 13), (13, 1), (16, 4), (17, 8), (20, 20)):
        np.testing.assert_array_equal(h_joints[:, ho3d_index], joints[:, ours_index] * flip)


def test_write_submission_orders_frames_and_zips_pred_json(tmp_path):
    rng = np.random.default_rng(1)
    order = [f"SM1/{i:04d}" for i in range(3)] + [f"MPM10/{i:04d}" for i in range(2)]
    (tmp_path / "evaluation.txt").write_text("\n".join(order) + "\n")
    ids = [order[i] for i in (3, 0, 4, 2, 1)]  # our rows in another order than evaluation.txt
    joints, verts = _hands(rng, 5)
    zipped = write_submission(tmp_path / "sub", ids, joints.astype(np.float32), verts, tmp_path / "evaluation.txt")
    assert zipped == tmp_path / "sub" / "pred.zip" and (tmp_path / "sub" / "pred.json").is_file()
    with zipfile.ZipFile(zipped) as z:
        assert z.namelist() == ["pred.json"]
        pred = json.loads(z.read("pred.json"))
    assert len(pred) == 2
    xyz, mesh = np.array(pred[0]), np.array(pred[1])
    assert xyz.shape == (5, 21, 3) and mesh.shape == (5, 778, 3)
    rows = [ids.index(f) for f in order]
    expected_xyz, expected_mesh = to_ho3d(joints.astype(np.float32)[rows], verts[rows])
    np.testing.assert_allclose(xyz, expected_xyz, atol=5e-7, rtol=0)  # 6 decimals in metres
    np.testing.assert_allclose(mesh, expected_mesh, atol=5e-7, rtol=0)
    assert (xyz[..., 2] < 0).all()  # OpenGL: the hand on -z


@pytest.mark.parametrize("ids, match", [
    (["A/0000", "A/0001"], "missing A/0002"),
    (["A/0000", "A/0001", "A/0002", "B/0000"], "not in the evaluation order B/0000"),
    (["A/0000", "A/0001", "A/0001"], "more than once: A/0001"),
])
def test_write_submission_needs_every_evaluation_frame_once(tmp_path, ids, match):
    joints, verts = _hands(np.random.default_rng(2), len(ids))
    with pytest.raises(ValueError, match=match):
        write_submission(tmp_path, ids, joints, verts, ["A/0000", "A/0001", "A/0002"])
    assert not list(tmp_path.iterdir())


def test_write_submission_refuses_bad_predictions(tmp_path):
    ids = ["A/0000", "A/0001"]
    joints, verts = _hands(np.random.default_rng(3), 2)
    with pytest.raises(ValueError, match="more than once: A/0000"):
        write_submission(tmp_path, ids, joints, verts, ["A/0000", "A/0001", "A/0000"])
    with pytest.raises(ValueError, match=r"behind the camera .*A/0001"):
        converted_twice = np.stack([joints[0], joints[1] * [1, -1, -1]])
        write_submission(tmp_path, ids, converted_twice, verts, ids)
    joints[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite predictions for A/0000"):
        write_submission(tmp_path, ids, joints, verts, ids)
    with pytest.raises(ValueError, match=r"verts must be \[N, 778, 3\]"):
        write_submission(tmp_path, ids, joints, verts[:, :21], ids)


def test_frame_id_from_the_readers_source_id():
    assert frame_id("evaluation/SM1/rgb/0003.jpg") == "SM1/0003"
    assert frame_id("evaluation/MPM10/rgb/0120.png") == "MPM10/0120"
    with pytest.raises(ValueError, match="not an HO-3D source id"):
        frame_id("SM1/0003")


# --- results.json and the Markdown report --------------------------------------------------------------------------

def _all_metrics() -> dict:
    rng = np.random.default_rng(4)
    gt_j, gt_v = _hands(rng, 4)
    return evaluate_predictions(gt_j + rng.normal(0, 0.005, gt_j.shape), gt_j, gt_v + 0.002, gt_v,
                                rng.normal(0, 5, (4, 21, 2)), np.zeros((4, 21, 2)), sequence=[0, 0, 0, 0])


def test_write_results_units_setting_and_null_for_nan(tmp_path):
    metrics = _all_metrics() | {"pa_mpvpe": np.float32(10.5), "f5": float("nan"), "ra_mpjpe": float("inf"),
                                "l_equiv": 0.25}
    context = CONTEXT | {"units": {"l_equiv": "px"}, "checkpoint": tmp_path / "ckpt"}
    path = write_results(tmp_path / "results.json", metrics, context)

    def no_constants(name):
        raise AssertionError(f"{name} in results.json")

    doc = json.loads(path.read_text(), parse_constant=no_constants)
    assert set(doc["metrics"]) == set(metrics) == set(doc["units"])
    assert doc["metrics"]["pa_mpvpe"] == 10.5 and doc["metrics"]["f5"] is None and doc["metrics"]["ra_mpjpe"] is None
    units = doc["units"]
    assert units["pa_mpjpe"] == units["sta_mpvpe"] == units["mpjpe"] == "mm"
    assert units["auc_pa_mpjpe_0_50"] == units["f15_pa"] == units["f5"] == "fraction"
    assert units["n_samples"] == "count" and units["epe_2d_px"] == "px" and units["l_equiv"] == "px"
    assert units["accel_error_mm_per_frame2"] == "mm/frame^2"
    setting = doc["setting"]
    assert {k: setting[k] for k in ("dataset", "split", "crops", "gt_root", "gt_scale")} == {
        "dataset": "ho3d", "split": "train", "crops": "gt_box", "gt_root": False, "gt_scale": False}
    assert "pa" in setting["conventions"] and "f_score" in setting["conventions"]
    assert doc["run"] == {"model": "rn18-tempclr", "checkpoint": str(tmp_path / "ckpt"), "data": "sample data"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # atomic: no temporary left


def test_write_results_requires_the_setting_and_known_units(tmp_path):
    with pytest.raises(ValueError, match=r"gt_scale \(bool\)"):
        write_results(tmp_path / "r.json", {"mpjpe": 1.0}, {k: v for k, v in CONTEXT.items() if k != "gt_scale"})
    with pytest.raises(ValueError, match=r"gt_root \(bool\)"):
        write_results(tmp_path / "r.json", {"mpjpe": 1.0}, CONTEXT | {"gt_root": "no"})
    with pytest.raises(ValueError, match="no unit known for metric 'l_equiv'"):
        write_results(tmp_path / "r.json", {"l_equiv": 1.0}, CONTEXT)
    assert not list(tmp_path.iterdir())


def test_published_table_holds_the_papers_numbers():
    counts = {(d, h): len(published_table(d, h)) for d in ("freihand", "ho3d") for h in ("mano", "2p5d")}
    assert counts == {("ho3d", "mano"): 8, ("freihand", "mano"): 10, ("freihand", "2p5d"): 9, ("ho3d", "2p5d"): 4}
    assert sum(counts.values()) == len(PUBLISHED)
    ho3d = {r.method: r for r in published_table("ho3d", "mano")}
    assert ho3d["TempCLR"].values == {"PA-V2V": "10.6", "PA-EPE": "10.6", "F@5": "0.481", "F@15": "0.937"}
    assert ho3d["Baseline [8] (ExPose)"].number("F@5") == 0.389 and ho3d["TempCLR†"].number("PA-EPE") == 10.1
    fh = {r.method: r for r in published_table("freihand", "mano")}
    assert fh["TempCLR-18"].values == {"PA-V2V": "10.9", "RA-V2V": "25.05", "F@5": "0.513", "F@15": "0.930"}
    assert fh["Hasson et al. [16]"].number("RA-V2V") is None and fh["Baseline-18 [8]"].number("RA-V2V") == 35.96
    peclr = {r.method: r for r in published_table("freihand", "2p5d")}
    assert peclr["RN50 + PeCLR"].values == {"3D PA-EPE": "0.71", "PA-AUC": "0.86"}
    assert peclr["Pose2Mesh [9]"].number("PA-AUC") is None
    assert all(r.source.split(" (")[0] in {"TempCLR Table 1", "TempCLR Table 2", "PeCLR Table 2",
                                           "PeCLR Supp. Table 4"} and "finetune_eval.md §3" in r.source
               and set(r.values) <= set(PAPER_METRICS) for r in PUBLISHED)
    with pytest.raises(ValueError, match="dataset must be one of"):
        published_table("stb", "mano")


def test_markdown_report_puts_ours_in_the_papers_units():
    metrics = {"pa_mpvpe": 10.934, "pa_mpjpe": 11.0, "f5_pa": 0.5, "f15_pa": float("nan"), "n_samples": 120}
    text = markdown_report(metrics, "ho3d", "mano", CONTEXT)
    assert "| **ours** (rn18-tempclr) | this run | 10.93 | 11.00 | 0.500 | – |" in text
    assert "| TempCLR† | TempCLR Table 1 | 10.0 | 10.1 | 0.505 | 0.947 |" in text
    assert "sample data, train split, 120 frames, crops: gt_box" in text and "official online server" in text
    assert "PA-V2V = pa_mpvpe" in text and "F@5 = f5_pa" in text and "aligned" in text
    text = markdown_report({"pa_mpjpe": 7.1, "auc_pa_mpjpe_0_50": 0.861}, "freihand", "2p5d", CONTEXT)
    assert "| **ours** (rn18-tempclr) | this run | 0.710 | 0.861 |" in text
    assert "3D PA-EPE = pa_mpjpe / 10 (mm -> cm)" in text and "| RN152 + PeCLR | PeCLR Table 2 | 0.66 | 0.87 |" in text
    text = markdown_report({"pa_mpjpe": 7.1, "mpjpe": 40.0}, "ho3d", "2p5d", CONTEXT | {"gt_scale": True})
    assert "| this run | 0.710 | – | 4.000 * | – |" in text and "\\* absolute metric computed with the ground" in text
    assert "| PeCLR | PeCLR Supp. Table 4 | 1.09 | 0.78 | 2.26 | 0.58 |" in text
    text = markdown_report({}, "freihand", "mano", CONTEXT)
    assert "| this run | – | – | – | – |" in text and "| Hasson et al. [16] | TempCLR Table 2 | 13.2 | – |" in text


# --- figures -------------------------------------------------------------------------------------------------------

def test_plots_are_pngs_of_the_stated_size(tmp_path):
    t = np.linspace(0, 50, 100)
    assert plot_pck({"PA": (t, t / 50), "RA": (t, (t / 50) ** 2)}, tmp_path / "pck.png") == tmp_path / "pck.png"
    assert _png_size(tmp_path / "pck.png") == (640, 480)
    plot_per_joint(np.arange(21.0), tmp_path / "joints.png")
    assert _png_size(tmp_path / "joints.png") == (1200, 480)
    plot_error_vs_time({"SM1": (np.arange(30), np.full(30, 9.0))}, tmp_path / "time.png")
    assert _png_size(tmp_path / "time.png") == (960, 720)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joints.png", "pck.png", "time.png"]


def test_per_joint_bars_are_the_inputs():
    errors = np.random.default_rng(5).uniform(5, 20, 21)
    ax = per_joint_figure(errors).axes[0]
    np.testing.assert_array_equal([p.get_height() for p in ax.patches], errors)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(JOINT_NAMES)
    assert JOINT_NAMES[0] == "wrist" and JOINT_NAMES[4] == "thumb_tip" and JOINT_NAMES[9] == "middle_mcp"
    ax = per_joint_figure({"PA": errors, "RA": errors * 3}).axes[0]
    np.testing.assert_array_equal([[p.get_height() for p in c] for c in ax.containers], [errors, errors * 3])
    with pytest.raises(ValueError, match="length 21"):
        per_joint_figure(errors[:20])


def test_error_vs_time_shows_the_longest_sequences_in_frame_order():
    sequences = {f"S{k}": (np.arange(10 + k)[::-1], np.arange(10.0 + k)[::-1]) for k in range(6)}
    fig = error_vs_time_figure(sequences, max_sequences=4)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["S5", "S4", "S3", "S2"]
    x, y = fig.axes[0].lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(15))
    np.testing.assert_array_equal(y, np.arange(15.0))


def test_plots_leave_matplotlib_global_state_alone(tmp_path):
    code = ("import sys, numpy as np; import pipeline.evaluate as e; assert 'matplotlib' not in sys.modules; "
            f"e.plot_per_joint(np.ones(21), {str(tmp_path / 'j.png')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
