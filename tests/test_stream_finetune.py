"""The stream's single-view labelled fine-tuning mode: labels follow the geometric augmentation exactly (checked
against the wrist mark drawn into the sample data's pixels, and against independent re-derivations on synthetic
labels), validation split and label subsets by stable hashes of ids, both executors agree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pipeline.augment.affine import view_affine
from pipeline.augment.colour import identity_appearance
from pipeline.augment.labels import transform_labels
from pipeline.augment.params import FINETUNE
from pipeline.augment.torch_exec import augment_pixels, model_input
from pipeline.errors import ConfigError
from pipeline.geometry import project
from pipeline.sampledata.render import find_mark
from pipeline.stream import DatasetSpec, HandStream, StreamConfig, StreamError, StreamLoader
from pipeline.stream.batch import FINETUNE_LABELS
from pipeline.stream.clipdata import clip_id
from pipeline.stream.config import preset_augment
from pipeline.stream.items import ROLE_VIEW
from pipeline.stream.splits import in_split, in_validation, label_selected, split_record
from tests.conftest import read_shard_set

LABEL_KEYS = ("labelled", "flat_hand_mean", *FINETUNE_LABELS)


def finetune(shards, datasets=("freihand", "ho3d"), **kw) -> StreamConfig:
    args = dict(mode="finetune", batch_size=8, out_size=224, interleave=2, augment=preset_augment("finetune"))
    args.update(kw)
    return StreamConfig(tuple(DatasetSpec(d, str(shards)) for d in datasets), **args)


def batches(cfg: StreamConfig) -> tuple[list[dict], StreamLoader]:
    loader = StreamLoader(HandStream(cfg), num_workers=0)
    return list(loader), loader


@pytest.fixture(scope="module")
def reference(sample_shards):
    return {clip_id(k): v for k, v in read_shard_set(sample_shards).items()}


@pytest.fixture(scope="module")
def augmented(sample_shards):
    return batches(finetune(sample_shards, items_per_sample=4, items_per_epoch=96))


def test_finetune_config_and_preset():
    cfg = StreamConfig((DatasetSpec("ho3d", "x"),), mode="finetune", labels=False)
    assert cfg.labels and cfg.views == 1 and preset_augment("finetune") is FINETUNE
    g = FINETUNE.geometry
    assert (g.rotation_deg, g.scale, g.translation) == (90.0, (0.7, 1.3), 0.4)
    draws = g.draw(np.random.default_rng(0), 4000)
    assert np.abs(draws[:, 0]).max() <= math.pi / 2 and draws[:, 1].min() >= 0.7 and draws[:, 1].max() <= 1.3
    assert np.abs(draws[:, 2:]).max() <= 0.4
    assert (FINETUNE.appearance.draw(np.random.default_rng(1), 500) == identity_appearance()).all()
    with pytest.raises(ConfigError, match="empty"):
        StreamConfig((DatasetSpec("ho3d", "x"),), split="val", val_fraction=0.0)


def test_batch_contract_and_wrist_mark_after_the_warp(augmented, reference):
    """The device-side warp of each item's frame shows the sample data's green wrist mark at the item's
    transformed 2D wrist; the transformed 3D joints project onto the transformed 2D with the new K."""
    out, loader = augmented
    errors, on_mark, flat = [], [], set()
    for batch in out:
        assert batch["frames"].shape == (8, 1, 256, 256, 3) and batch["warped"] is False
        assert (batch["role"] == ROLE_VIEW).all() and batch["labelled"].all()
        assert batch["kp2d"].shape == (8, 1, 21, 2) and batch["verts"].shape == (8, 1, 778, 3)
        assert batch["mano_pose"].shape == (8, 1, 48) and batch["flat_hand_mean"].dtype == torch.int8
        for b in range(8):  # 3D labels (and vertices, where the shards have them) rotated with the image
            stored = reference[int(batch["clip"][b])]["labels"]
            p, angle = int(batch["position"][b, 0]), float(batch["geometry"][b, 0, 0])
            Rz = Rotation.from_euler("z", angle).as_matrix()
            for name in ("kp3d", "verts"):
                want = stored[name][p] @ Rz.T if name in stored else np.full(FINETUNE_LABELS[name], np.nan)
                np.testing.assert_allclose(batch[name][b, 0].numpy(), want, atol=1e-6)
        assert (batch["appearance"] == torch.from_numpy(identity_appearance()).float()).all()  # geometry only
        conventions = [reference[int(c)]["meta"]["mano_flat_hand_mean"] for c in batch["clip"]]
        assert batch["flat_hand_mean"].tolist() == [{True: 1, False: 0, None: -1}[c] for c in conventions]
        flat.update(zip(batch["dataset"].tolist(), batch["flat_hand_mean"].tolist(), strict=True))
        pixels = model_input(batch, 224, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, channels_last=False)
        for b in range(8):
            kp2d, kp3d, K = (batch[k][b, 0].double().numpy() for k in ("kp2d", "kp3d", "K"))
            if np.isnan(kp2d).any():  # HO-3D evaluation frames carry K only
                assert int(batch["dataset"][b]) == 1
                continue
            np.testing.assert_allclose(project(K, kp3d), kp2d, atol=1e-2)
            wrist = kp2d[0]
            if not ((wrist > 8) & (wrist < 216)).all():
                continue
            img = pixels[b].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
            x, y = np.rint(wrist).astype(int)
            on_mark.append(img[y, x, 1] > 200 and img[y, x, 0] < 80 and img[y, x, 2] < 80)
            errors.append(find_mark(img) - wrist)
    errors = np.array(errors)
    assert len(errors) >= 40 and all(on_mark)
    assert np.abs(errors.mean(axis=0)).max() < 0.3 and np.linalg.norm(errors, axis=1).max() < 1.5
    assert loader.stats()["counts"]["items"] == 96
    assert {(0, 0), (1, 1)} <= flat  # FreiHAND's MANO convention is flat_hand_mean False, HO-3D's True


def test_items_come_from_labelled_frames_only(sample_shards, reference):
    """Every labelled frame of the HO-3D samples once per pass, the unlabelled one never."""
    out, loader = batches(finetune(sample_shards, datasets=("ho3d",), batch_size=7, items_per_sample=25,
                                   items_per_epoch=49))
    seen = sorted((int(c), int(f)) for b in out for c, f in zip(b["clip"], b["frame"][:, 0], strict=True))
    expected = sorted((c, int(i)) for c, r in reference.items() if r["meta"]["dataset"] == "ho3d"
                      for i, lab in zip(r["meta"]["frames"]["index"], r["labels"]["labelled"], strict=True) if lab)
    assert seen == expected and len(seen) == 49
    assert (clip_id("ho3d-train_MC1-0-0"), 5) not in seen  # the sample data's unlabelled frame


def rotation_2d(a: float) -> np.ndarray:
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def forward(x: np.ndarray, box: np.ndarray, offset: np.ndarray, g: np.ndarray, k: float) -> np.ndarray:
    """Slot -> output pixels as affine.py's docstring writes it (O = 224): (1/k) R(a) (x - c) + o + t O."""
    centre = (box[:2] + box[2:]) / 2 - 0.5 + offset
    return (x - centre) @ rotation_2d(g[0]).T / k + 111.5 + g[2:] * 224


def test_label_transforms_match_independent_derivations():
    """Synthetic exact labels: kp2d = K X / Z in slot pixels, random FINETUNE geometry. The transformed 2D equals
    the forward map of affine.py's docstring; the rotated 3D projects onto it with the new K, which is the
    pinhole [[f/k, 0, c'], [0, f/k, c'], [0, 0, 1]] (this fixes the rotation's sign); the global orientation is
    Rz @ R (scipy); articulation and shape are unchanged; absent fields stay NaN."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        X = np.c_[rng.uniform(-0.15, 0.15, (21, 2)), rng.uniform(0.3, 0.9, 21)]
        f, c = rng.uniform(200, 900), rng.uniform(80, 180, 2)
        K = np.array([[f, 0.0, c[0]], [0.0, f, c[1]], [0.0, 0.0, 1.0]])
        kp2d = project(K, X)
        box = np.r_[rng.uniform(20, 100, 2), 0.0, 0.0]
        box[2:] = box[:2] + rng.uniform(30, 120, 2)
        offset = rng.integers(0, 32, 2).astype(float)
        g = FINETUNE.geometry.draw(rng, 1)[0]
        A = view_affine(box[None], offset[None], 224, 1.5, g[None])[0]
        pose, shape = rng.normal(0, 0.8, 48), rng.normal(0, 1, 10)
        out = transform_labels({"kp2d": kp2d, "K": K, "kp3d": X, "verts": X[:5], "mano_pose": pose,
                                "mano_shape": shape}, A, g[0])

        k = 1.5 * max(box[2] - box[0], box[3] - box[1]) / (224 * g[1])
        np.testing.assert_allclose(out["kp2d"], forward(kp2d, box, offset, g, k), atol=1e-9)
        pinhole = np.array([[f / k, 0.0, 0.0], [0.0, f / k, 0.0], [0.0, 0.0, 1.0]])
        pinhole[:2, 2] = forward(c[None], box, offset, g, k)[0]
        np.testing.assert_allclose(out["K"], pinhole, atol=1e-9)
        Rz = np.eye(3)
        Rz[:2, :2] = rotation_2d(g[0])
        np.testing.assert_allclose(out["kp3d"], X @ Rz.T, atol=1e-12)
        np.testing.assert_allclose(out["verts"], X[:5] @ Rz.T, atol=1e-12)
        assert np.abs(project(pinhole, out["kp3d"]) - out["kp2d"]).max() < 1e-3
        orient = Rotation.from_rotvec(out["mano_pose"][:3]).as_matrix()
        np.testing.assert_allclose(orient, Rz @ Rotation.from_rotvec(pose[:3]).as_matrix(), atol=1e-9)
        assert np.array_equal(out["mano_pose"][3:], pose[3:]) and np.array_equal(out["mano_shape"], shape)
    # fx != fy: the new K still projects exactly (it is no longer a pinhole matrix: documented approximation)
    K2 = np.array([[500.0, 0.0, 120.0], [0.0, 470.0, 110.0], [0.0, 0.0, 1.0]])
    out = transform_labels({"kp2d": project(K2, X), "K": K2, "kp3d": X}, A, g[0])
    assert np.abs(project(out["K"], out["kp3d"]) - out["kp2d"]).max() < 1e-3
    np.testing.assert_allclose(out["K"][1, 0], 30.0 * math.sin(g[0]) * math.cos(g[0]) / k, atol=1e-9)
    nan = transform_labels({"mano_pose": np.full(48, np.nan), "kp3d": np.full((21, 3), np.nan)}, A, g[0])
    assert np.isnan(nan["mano_pose"]).all() and np.isnan(nan["kp3d"]).all()


def test_validation_split_by_unique_id_and_sequence():
    """About val_fraction of unique ids (Binomial, 5 sigma); train and val partition them; HO-3D-like sequences
    are held out whole (the rule sees no frame or chunk)."""
    n, p = 20000, 0.1
    ids = [f"{i:08d}" for i in range(n)]
    val = np.array([in_validation("freihand", s, p, 0) for s in ids])
    assert abs(val.sum() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    train = np.array([in_split("train", "freihand", s, p, 0) for s in ids])
    assert (train ^ val).all() and all(in_split("all", "freihand", s, p, 0) for s in ids[:100])
    again = np.array([in_validation("freihand", s, p, 0) for s in ids])
    other = np.array([in_validation("freihand", s, p, 1) for s in ids])
    assert np.array_equal(val, again) and not np.array_equal(val, other)
    assert not np.array_equal(val, [in_validation("ho3d", s, p, 0) for s in ids])


def test_label_fraction_is_a_deterministic_stride_or_id_subset():
    f = 0.3
    # single-frame sequences (FreiHAND: index 0): a random share f of unique ids
    n = 20000
    keep = np.array([label_selected("freihand", f"{i:08d}", 0, f, 0) for i in range(n)])
    assert abs(keep.sum() - n * f) <= 5 * math.sqrt(n * f * (1 - f))
    assert np.array_equal(keep, [label_selected("freihand", f"{i:08d}", 0, f, 0) for i in range(n)])
    assert not np.array_equal(keep, [label_selected("freihand", f"{i:08d}", 0, f, 5) for i in range(n)])
    # videos (HO-3D): a uniform stride, exactly f of the frames up to one, random phase per sequence
    frames = np.arange(1000)
    phases = set()
    for s in range(50):
        sel = label_selected("ho3d", f"train_S{s}", frames, f, 0)
        assert abs(sel.sum() - f * len(frames)) <= 1 and set(np.diff(np.flatnonzero(sel))) <= {3, 4}
        assert np.array_equal(sel, label_selected("ho3d", f"train_S{s}", frames, f, 0))
        phases.add(int(np.flatnonzero(sel)[0]))
    assert len(phases) > 1
    assert label_selected("ho3d", "x", frames, 1.0, 0).all()


def test_splits_on_the_stream_keep_freihand_versions_together(sample_shards, reference):
    """Train and val streams partition the FreiHAND ids, each id with all four background versions; the default
    epoch length counts the split's samples; the label fraction marks frames unlabelled and is counted."""
    ids = [f"{i:08d}" for i in range(5)]
    seed = next(s for s in range(100) if 0 < sum(in_validation("freihand", i, 0.5, s) for i in ids) < 5)
    seen = {}
    for split in ("train", "val"):
        cfg = finetune(sample_shards, datasets=("freihand",), batch_size=4, split=split, val_fraction=0.5,
                       split_seed=seed)
        out, loader = batches(cfg)
        keys = [reference[int(c)]["meta"] for b in out for c in b["clip"]]
        seen[split] = {(m["sequence"], m["view"]) for m in keys}
        assert len(keys) == len(seen[split])  # one pass: every sample of the split once
        assert loader.stats()["counts"].get("split_excluded", 0) >= 1
        assert json.loads(json.dumps(split_record(cfg)))["split"] == split
    train, val = ({s for s, _ in seen[k]} for k in ("train", "val"))
    assert train | val == set(ids) and not train & val
    assert all(len([v for s, v in seen[k] if s == i]) == 4 for k in seen for i in {s for s, _ in seen[k]})
    assert val == {i for i in ids if in_validation("freihand", i, 0.5, seed)}
    out, loader = batches(finetune(sample_shards, datasets=("ho3d",), label_fraction=0.5, items_per_sample=25,
                                   items_per_epoch=24))
    assert loader.stats()["counts"]["labels_excluded"] >= 19
    # other modes see the excluded frames as unlabelled, their labels NaN
    tempclr = StreamConfig((DatasetSpec("ho3d", str(sample_shards)),), batch_size=8, out_size=64, labels=True,
                           label_fraction=0.5, items_per_epoch=16)
    for b in batches(tempclr)[0]:
        for c, fr, lab, kp in zip(b["clip"].repeat_interleave(4), b["frame"].flatten(), b["labelled"].flatten(),
                                  b["kp3d"].flatten(0, 1), strict=True):
            selected = label_selected("ho3d", reference[int(c)]["meta"]["sequence"], int(fr), 0.5, 0)
            assert not (lab or torch.isfinite(kp).any()) or selected
    for b in out:
        for c, fr in zip(b["clip"], b["frame"][:, 0], strict=True):
            assert label_selected("ho3d", reference[int(c)]["meta"]["sequence"], int(fr), 0.5, 0)
    seed = next(s for s in range(100) if 0 < sum(label_selected("freihand", i, 0, 0.3, s) for i in ids) < 5)
    out, loader = batches(finetune(sample_shards, datasets=("freihand",), label_fraction=0.3, split_seed=seed,
                                   items_per_epoch=8))
    assert loader.stats()["skips"]["no_labelled_frames"] >= 1


def test_unlabelled_dataset_is_a_clear_error(sample_shards):
    with pytest.raises(StreamError, match="no usable item"):
        batches(finetune(sample_shards, datasets=("doh100",), items_per_epoch=8))


def test_cv2_executor_agrees_and_labels_are_identical(sample_shards):
    base = finetune(sample_shards, out_size=96, items_per_epoch=32)
    (a, _), (b, _) = batches(base), batches(finetune(sample_shards, out_size=96, items_per_epoch=32, executor="cv2"))
    for x, y in zip(a, b, strict=True):
        assert y["warped"] is True and torch.equal(x["affine"], y["affine"])
        for key in LABEL_KEYS:
            assert torch.equal(x[key], y[key]) if not x[key].is_floating_point() else \
                torch.allclose(x[key], y[key], rtol=0, atol=0, equal_nan=True)
        ref = augment_pixels(x["frames"], x["affine"], x["appearance"], 96, x["fill"]).round()
        got = y["frames"].reshape(-1, 96, 96, 3).permute(0, 3, 1, 2).float()
        diff = (ref - got).abs()[:, :, 2:-2, 2:-2]
        assert diff.mean() < 0.5 and (diff > 1).float().mean() < 0.01
