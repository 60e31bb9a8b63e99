"""Small but non-trivial copies of the four official dataset layouts (see shared/datasets.md).

Each writer returns the ground truth tests need (frame counts, boxes, 3D joints, MANO parameters, vertices),
computed here from the generator's own parameters, not read back through the project's readers. The FreiHAND and
HO-3D hands are poses of one synthetic MANO model (written to `mano/MANO_RIGHT.pkl`) in each dataset's MANO
convention; HanCo keeps its procedural skeletons (its MANO fits are random numbers, not fits).
"""

from __future__ import annotations

import json
import pickle
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pipeline.geometry import MANO_TO_FREIHAND, OPENGL_TO_OPENCV, project, rotate_global_orient
from pipeline.models.mano_synthetic import synthetic_mano_arrays, write_synthetic_mano
from pipeline.sampledata.posing import HandModel, Hands, clip_params, random_params
from pipeline.sampledata.render import draw_hand, hand_skeleton, rotation, texture
from pipeline.sources.boxes import box_from_keypoints
from pipeline.sources.doh100 import TRACK_COLUMNS

MANO_FILE = "mano/MANO_RIGHT.pkl"  # the synthetic model every labelled FreiHAND and HO-3D hand is posed with
FREIHAND_ROOT = 9  # keypoint (middle MCP) that FreiHAND's MANO uv / scale place (toolkit: HandModel.pose_by_root)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    path.write_bytes(buf.tobytes())


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    path.write_bytes(buf.tobytes())


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _hand_at(t: float, centre: np.ndarray, phase: float) -> np.ndarray:
    """Camera-frame (OpenCV) joints of a hand moving smoothly around `centre`."""
    R = rotation(0.4 * np.sin(0.1 * t + phase), 0.3 * np.cos(0.07 * t), 0.5 * np.sin(0.05 * t + phase))
    drift = np.array([0.03 * np.sin(0.08 * t + phase), 0.02 * np.cos(0.06 * t), 0.02 * np.sin(0.05 * t)])
    return hand_skeleton(t, phase) @ R.T + centre + drift


def _frame_image(rng, height: int, width: int, uv: np.ndarray, box) -> np.ndarray:
    img = texture(rng, height, width)
    draw_hand(img, uv, box)
    return img


def hanco(root: Path, rng: np.random.Generator, sequences: int = 2, frames: int = 12, cameras: int = 8) -> dict:
    """rgb/, rgb_merged/ (first sequence only, as for green-screen sequences), xyz/, calib/, shape/, meta.json."""
    K = np.array([[280.0, 0, 112.0], [0, 280.0, 112.0], [0, 0, 1]])
    meta = {k: [] for k in ("is_train", "subject_id", "is_valid", "object_id", "has_fit")}
    truth = {"clips": sequences * cameras, "frames": sequences * cameras * frames, "kp3d": {}}
    for sid in range(sequences):
        Ms = []
        for c in range(cameras):
            R = rotation(2 * np.pi * c / cameras * 0.15, 0.1 * c / cameras, 0.0)
            M = np.eye(4)
            M[:3, :3], M[:3, 3] = R, [0.0, 0.0, 0.45]
            Ms.append(M)
        for fid in range(frames):
            world = _hand_at(fid, np.array([0.0, 0.04, 0.0]), sid)
            _json(root / "xyz" / f"{sid:04d}" / f"{fid:08d}.json", world.tolist())
            _json(root / "calib" / f"{sid:04d}" / f"{fid:08d}.json",
                  {"K": [K.tolist()] * cameras, "M": [M.tolist() for M in Ms]})
            _json(root / "shape" / f"{sid:04d}" / f"{fid:08d}.json",
                  {"poses": [rng.normal(0, 0.2, 48).tolist()], "shapes": [rng.normal(0, 1, 10).tolist()],
                   "global_t": [[[0.0, 0.0, 0.45]]]})
            for c, M in enumerate(Ms):
                cam = world @ M[:3, :3].T + M[:3, 3]
                uv = project(K, cam)
                truth["kp3d"][(sid, c, fid)] = cam
                img = _frame_image(rng, 224, 224, uv, box_from_keypoints(uv, 224, 224, 1.2))
                write_jpeg(root / "rgb" / f"{sid:04d}" / f"cam{c}" / f"{fid:08d}.jpg", img)
                if sid == 0:
                    write_jpeg(root / "rgb_merged" / f"{sid:04d}" / f"cam{c}" / f"{fid:08d}.jpg", img[:, :, ::-1])
        meta["is_train"].append([sid == 0] * frames)
        meta["subject_id"].append([sid] * frames)
        meta["is_valid"].append([True] * frames)
        meta["object_id"].append([None if sid == 0 else 7] * frames)
        meta["has_fit"].append([True] * frames)
    _json(root / "meta.json", meta)
    return truth


def _model(model: HandModel | None) -> HandModel:
    return model if model is not None else HandModel(synthetic_mano_arrays())


def _drift(frames: int, phase: float) -> np.ndarray:
    """[frames, 3] smooth wandering of a clip's hand, metres."""
    t = np.arange(frames)[:, None]
    return np.array([0.03, 0.02, 0.02]) * np.sin(np.array([0.3, 0.2, 0.25]) * t + np.array([phase, 1.0, 2.0]))


def _ho3d_clip(model: HandModel, rng, frames: int, centre, phase: float) -> Hands:
    """One HO-3D hand over a clip: MANO with flat_hand_mean=True and HO-3D's fingertip vertices."""
    pose, shape = clip_params(rng, frames)
    return model.place(pose, shape, np.asarray(centre) + _drift(frames, phase), flat_hand_mean=True, tips="ho3d")


def ho3d_meta(hands: Hands, i: int, K: np.ndarray) -> dict:
    """HO-3D's meta for frame i: OpenGL axes (F = diag(1, -1, -1)), HO-3D joint order. MANO(handPose, handBeta,
    handTrans) = F MANO(pose, shape, trans) needs handPose's global orientation F R and handTrans = F (j0 + trans)
    - j0, since MANO rotates about its rest wrist j0 (the posed wrist minus trans)."""
    ho3d_order = np.empty_like(hands.joints[i])
    ho3d_order[MANO_TO_FREIHAND] = hands.joints[i]
    wrist = hands.joints[i, 0]
    return {"handJoints3D": (ho3d_order @ OPENGL_TO_OPENCV).astype(np.float32),
            "handPose": rotate_global_orient(hands.pose[i], OPENGL_TO_OPENCV).astype(np.float32),
            "handBeta": hands.shape[i].astype(np.float32),
            "handTrans": (OPENGL_TO_OPENCV @ wrist - (wrist - hands.trans[i])).astype(np.float32),
            "camMat": K.astype(np.float32), "objRot": np.zeros(3, np.float32), "objTrans": np.zeros(3, np.float32),
            "objName": "003_cracker_box", "objCorners3D": np.zeros((8, 3), np.float32), "objLabel": 1}


def write_pickle(path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(meta, protocol=2))


def ho3d(root: Path, rng: np.random.Generator, version: int = 3, frames: int = 20, eval_frames: int = 10,
         model: HandModel | None = None) -> dict:
    """train/{ABF10,MC1} with meta pickles (MC1/0005 unannotated), evaluation/SM1 with handBoundingBox."""
    model = _model(model)
    ext = ".jpg" if version == 3 else ".png"
    write = write_jpeg if version == 3 else _png
    K = np.array([[615.0, 0, 320.0], [0, 615.0, 240.0], [0, 0, 1]])
    truth = {"frames": {}, "boxes": {}, "kp3d": {}, "mano": {}, "unlabelled": ["MC1/0005"]}
    listed = []
    for s, seq in enumerate(["ABF10", "MC1"]):
        truth["frames"][f"train_{seq}"] = frames
        hands = _ho3d_clip(model, rng, frames, (0.02 * s, 0.0, 0.5), s)
        for i in range(frames):
            uv = project(K, hands.joints[i])
            box = box_from_keypoints(uv, 640, 480)
            write(root / "train" / seq / "rgb" / f"{i:04d}{ext}", _frame_image(rng, 480, 640, uv, box))
            _png(root / "train" / seq / "depth" / f"{i:04d}.png", np.zeros((8, 8, 3), np.uint8))
            meta = ho3d_meta(hands, i, K)
            if f"{seq}/{i:04d}" in truth["unlabelled"]:
                meta = {k: None for k in meta}
            else:
                listed.append(f"{seq}/{i:04d}")
                truth["kp3d"][(f"train_{seq}", i)] = hands.joints[i]
                truth["mano"][(f"train_{seq}", i)] = (hands.pose[i], hands.shape[i])
            truth["boxes"][(f"train_{seq}", i)] = box
            write_pickle(root / "train" / seq / "meta" / f"{i:04d}.pkl", meta)
    (root / "train.txt").write_text("\n".join(listed) + "\n")
    eval_listed = []
    truth["frames"]["evaluation_SM1"] = eval_frames
    hands = _ho3d_clip(model, rng, eval_frames, (0.0, 0.02, 0.55), 2.0)
    for i in range(eval_frames):
        uv = project(K, hands.joints[i])
        box = box_from_keypoints(uv, 640, 480, 1.3)
        write(root / "evaluation" / "SM1" / "rgb" / f"{i:04d}{ext}", _frame_image(rng, 480, 640, uv, box))
        write_pickle(root / "evaluation" / "SM1" / "meta" / f"{i:04d}.pkl",
                {"handJoints3D": (hands.joints[i, 0] @ OPENGL_TO_OPENCV).astype(np.float32),
                 "handBoundingBox": np.array(box, np.float32), "camMat": K.astype(np.float32), "objName": "x"})
        truth["boxes"][("evaluation_SM1", i)] = box
        eval_listed.append(f"SM1/{i:04d}")
    (root / "evaluation.txt").write_text("\n".join(eval_listed) + "\n")
    return truth


VOC = "pascal_voc_format/VOCdevkit2007_handobj_100K/VOC2007"
VIDEO_ID = "boardgame_848_sU8S98MT1Mo"


def _voc_xml(stem: str, width: int, height: int, hands: list[tuple[tuple[int, ...], int]]) -> str:
    objects = "".join(
        f"<object><name>hand</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>"
        f"<contactstate>3</contactstate><handside>{side}</handside><objxmin>None</objxmin><objymin>None</objymin>"
        f"<objxmax>None</objxmax><objymax>None</objymax><magnitude>10.5</magnitude><unitdx>0.6</unitdx>"
        f"<unitdy>-0.8</unitdy></object>" for b, side in hands)
    target = ("<object><name>targetobject</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>60</xmax>"
              "<ymax>60</ymax></bndbox><contactstate></contactstate><handside></handside></object>")
    return (f"<annotation><folder>VOC2007</folder><filename>{stem}.jpg</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objects}{target}</annotation>")


def _flat_hand(rng, img: np.ndarray, box) -> None:
    """A drawn hand filling an annotated box (for the box-only 100DOH releases)."""
    x1, y1, x2, y2 = box
    t = rng.random() * 10
    joints = hand_skeleton(t)
    uv = joints[:, :2]
    uv = (uv - uv.min(0)) / np.maximum(np.ptp(uv, 0), 1e-6)
    uv = np.stack([x1 + (0.15 + 0.7 * uv[:, 0]) * (x2 - x1), y1 + (0.15 + 0.7 * uv[:, 1]) * (y2 - y1)], 1)
    draw_hand(img, uv, box)


def doh100(root: Path, rng: np.random.Generator, video_frames: int = 60) -> dict:
    """VOC release (3 frames), JSON release (2 frames), one raw video with its meta table and box tracks."""
    W, H = 640, 360
    truth = {"voc_hands": 0, "json_hands": 0, "left": [], "video_frames": video_frames}
    voc_sets = {"trainval": [], "test": []}
    for n, hands in enumerate([[((100, 80, 220, 200), 1)], [((300, 100, 400, 220), 0), ((420, 90, 540, 210), 1)],
                               [((50, 150, 170, 300), 1)]]):
        stem = f"boardgame_848_sU8S98MT1Mo_{13957 + 30 * n:08d}"
        img = texture(rng, H, W)
        for box, _ in hands:
            _flat_hand(rng, img, box)
        write_jpeg(root / VOC / "JPEGImages" / f"{stem}.jpg", img)
        (root / VOC / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / VOC / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, W, H, hands))
        voc_sets["test" if n == 2 else "trainval"].append(stem)
        truth["voc_hands"] += len(hands)
        truth["left"] += [f"voc_{stem}_hand{h}" for h, (_, side) in enumerate(hands) if side == 0]
    for name, stems in voc_sets.items():
        (root / VOC / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / VOC / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(stems) + "\n")
    table = {}
    for n in range(2):
        rel = f"cooking/cooking_101_aBcDeFgHiJk_{100 + n:08d}.jpg"
        box = (0.2 + 0.3 * n, 0.25, 0.4 + 0.3 * n, 0.65)
        img = texture(rng, H, W)
        _flat_hand(rng, img, (box[0] * W, box[1] * H, box[2] * W, box[3] * H))
        write_jpeg(root / "raw" / rel, img)
        table[rel] = [{"x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "contact_state": 3,
                       "hand_side": "r" if n == 0 else "l", "obj_bbox": None}]
        truth["json_hands"] += 1
    _json(root / "file" / "trainval.json", table)
    rate = Fraction(30000, 1001)
    (root / "file" / "meta_100DOH_video.txt").write_text(
        "video_id genre youtube_id frame_rate num_frames\n"
        f"{VIDEO_ID} boardgame sU8S98MT1Mo {rate.numerator}/{rate.denominator} {video_frames}\n")
    truth.update(_video(root, rng, video_frames, float(rate), W, H))
    return truth


def _video(root: Path, rng, n: int, fps: float, W: int, H: int) -> dict:
    """Raw mp4 with a right hand (short detection gap: interpolated) and a left hand (long gap: split)."""
    (root / "raw_videos").mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(root / "raw_videos" / f"{VIDEO_ID}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (W, H))
    background = texture(rng, H, W)
    rows = [",".join(TRACK_COLUMNS)]
    right_gap, left_gap = set(range(20, 23)), set(range(24, 36))
    boxes = {"right": {}, "left": {}}
    for i in range(n):
        img = background.copy()
        for side, cx in (("right", 180 + 2.0 * i), ("left", 460 - 1.5 * i)):
            box = (cx - 50, 110 + 20 * np.sin(i / 9), cx + 50, 230 + 20 * np.sin(i / 9))
            boxes[side][i] = box
            _flat_hand(np.random.default_rng(i), img, box)
            gap = right_gap if side == "right" else left_gap
            if i not in gap:
                rows.append(f"{VIDEO_ID},{i},{box[0]:.2f},{box[1]:.2f},{box[2]:.2f},{box[3]:.2f},"
                            f"{side[0].upper()},0.95")
        cv2.putText(img, str(i), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    rows.append(f"{VIDEO_ID},5,0,0,20,20,R,0.1")  # low-score false positive, dropped by min_score
    (root / "tracks").mkdir(parents=True, exist_ok=True)
    (root / "tracks" / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"video_boxes": boxes, "right_gap": sorted(right_gap), "left_gap": sorted(left_gap)}


def _freihand_mano(hands: Hands, Ks: np.ndarray) -> list:
    """[[pose 48, shape 10, uv 2, scale 1]] per sample. As the FreiHAND toolkit reads them (utils/model.py:
    recover_root, pose_by_root), uv is the pixel of keypoint FREIHAND_ROOT and scale = focal / its depth with
    focal = (fx + fy) / 2; back-projecting uv at that depth gives xyz[FREIHAND_ROOT], where the toolkit puts the
    mesh's keypoint FREIHAND_ROOT: that is the translation (exact here, fx = fy)."""
    root = hands.joints[:, FREIHAND_ROOT]
    entries = []
    for i, K in enumerate(Ks):
        uv = project(K, root[i:i + 1])[0]
        scale = 0.5 * (K[0, 0] + K[1, 1]) / root[i, 2]
        entries.append([[*hands.pose[i], *hands.shape[i], *uv, scale]])
    return entries


def _freihand_split(root: Path, rng, model: HandModel, split: str, n: int, versions: int) -> dict:
    """`<split>/rgb` (`versions` background versions), training masks, `<split>_{K,xyz,verts,mano,scale}.json`."""
    pose, shape = random_params(rng, n)
    centres = np.column_stack([rng.uniform(-0.01, 0.01, (n, 2)), rng.uniform(0.47, 0.53, n)])
    hands = model.place(pose, shape, centres, flat_hand_mean=False, tips="freihand")
    focal = 300.0 + 10 * np.arange(n) + (5.0 if split == "evaluation" else 0.0)
    Ks = np.array([[[f, 0, 112.0], [0, f, 112.0], [0, 0, 1]] for f in focal])
    for i in range(n):
        uv = project(Ks[i], hands.joints[i])
        for version in range(versions):
            write_jpeg(root / split / "rgb" / f"{i + n * version:08d}.jpg",
                  _frame_image(rng, 224, 224, uv, box_from_keypoints(uv, 224, 224, 1.2)))
            if split == "training":
                write_jpeg(root / split / "mask" / f"{i + n * version:08d}.jpg", np.zeros((224, 224, 3), np.uint8))
    # scale.json: the metric length of a reference bone (the toolkit's pred.py); here the middle finger's first bone.
    bone = np.linalg.norm(hands.joints[:, 10] - hands.joints[:, FREIHAND_ROOT], axis=1)
    for name, data in (("K", Ks.tolist()), ("xyz", hands.joints.tolist()), ("verts", hands.verts.tolist()),
                       ("mano", _freihand_mano(hands, Ks)), ("scale", bone.tolist())):
        _json(root / f"{split}_{name}.json", data)
    return {"n": n, "kp3d": hands.joints, "verts": hands.verts, "pose": hands.pose, "shape": hands.shape,
            "trans": hands.trans, "K": Ks}


def freihand(root: Path, rng: np.random.Generator, n: int = 5, eval_n: int = 3,
             model: HandModel | None = None) -> dict:
    """Training (4 background versions) and evaluation with ground truth (FreiHAND_pub_v2_eval), MANO with
    flat_hand_mean=False and FreiHAND's fingertip vertices. Training truth at the top level, evaluation under
    "evaluation"."""
    model = _model(model)
    training = _freihand_split(root, rng, model, "training", n, 4)
    return {**training, "evaluation": _freihand_split(root, rng, model, "evaluation", eval_n, 1)}


def generate(out: str | Path, seed: int = 0, ho3d_version: int = 3) -> dict:
    """Write hanco/, ho3d/, doh100/, freihand/ and the MANO model they are posed with (MANO_FILE) under `out`;
    return the generator's ground truth."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    (out / MANO_FILE).parent.mkdir(parents=True, exist_ok=True)
    model = HandModel(write_synthetic_mano(out / MANO_FILE, seed))
    return {"hanco": hanco(out / "hanco", rng), "ho3d": ho3d(out / "ho3d", rng, ho3d_version, model=model),
            "doh100": doh100(out / "doh100", rng), "freihand": freihand(out / "freihand", rng, model=model),
            "mano": out / MANO_FILE}
