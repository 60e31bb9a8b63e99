"""Fine-tuning and evaluation end to end on the sample shards, and the pieces against independent references:
the MANO kinematics against smplx's own forward, the encoder initialisation, the loss going down, the sweep
covering every labelled frame once, and evaluate writing its results."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch

from pipeline.augment.torch_exec import model_input
from pipeline.errors import ConfigError
from pipeline.evaluate.run import evaluate_run
from pipeline.evaluate.sweep import sweep_batches
from pipeline.models.mano import build_mano_layer, load_mano, mano_joints21
from pipeline.models.reconstructor import HandReconstructor, MANOKinematics
from pipeline.models.rotations import axis_angle_to_matrix
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.stream import DatasetSpec, StreamConfig
from pipeline.train.config import load_config
from pipeline.train.tasks.finetune import FinetuneTask
from pipeline.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "finetune_smoke.yaml"


@pytest.fixture(scope="module")
def mano_file(sample) -> Path:
    return sample[1]["mano"]


@pytest.fixture(scope="module")
def eval_shards(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-shards")
    shard(load_recipe(REPO / "shards" / "freihand_eval.yaml"), sample[0] / "freihand", out, workers=1, progress=False)
    return out


def test_mano_kinematics_equals_smplx_forward(mano_file):
    """Rotation matrices through our LBS call == smplx.MANO posed with the same axis-angles (its Rodrigues)."""
    g = torch.Generator().manual_seed(0)
    pose, betas = 0.4 * torch.randn(3, 48, generator=g), 0.5 * torch.randn(3, 10, generator=g)
    ours = MANOKinematics(mano_file, "freihand")
    joints, verts = ours(axis_angle_to_matrix(pose.reshape(3, 16, 3)), betas)
    layer = build_mano_layer(load_mano(mano_file), flat_hand_mean=True, batch_size=3)
    ref = layer(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=betas)
    assert torch.allclose(verts, ref.vertices, atol=1e-6)
    assert torch.allclose(joints, mano_joints21(ref, "freihand"), atol=1e-6)


def test_absolute_pose_adds_the_mean_only_for_relative_conventions(mano_file):
    """A FreiHAND-style pose (flat_hand_mean false) made absolute and posed flat == smplx with the mean on."""
    ours = MANOKinematics(mano_file)
    pose, betas = 0.3 * torch.randn(2, 48, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 10)
    absolute = ours.absolute_pose(pose, torch.tensor([0, 1], dtype=torch.int8))
    _, verts = ours(axis_angle_to_matrix(absolute.reshape(2, 16, 3)), betas)
    for i, flat in enumerate((False, True)):
        ref = build_mano_layer(load_mano(mano_file), flat_hand_mean=flat)(
            global_orient=pose[i:i + 1, :3], hand_pose=pose[i:i + 1, 3:], betas=betas[:1])
        assert torch.allclose(verts[i], ref.vertices[0], atol=1e-6)
    assert torch.isnan(ours.absolute_pose(pose, torch.tensor([-1, 1], dtype=torch.int8))[0]).all()


def test_encoder_initialisation_from_a_pretraining_export(tmp_path):
    encoder = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "encoder.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path),
                                metadata={"timm_model": "test_resnet"})
    model = HandReconstructor("test_resnet", "mano", init=str(path), hidden=(16,))
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in encoder.state_dict().items())
    with pytest.raises(ConfigError, match="holds a test_resnet encoder, model.backbone is resnet18"):
        HandReconstructor("resnet18", "mano", init=str(path))
    with pytest.raises(ConfigError, match="neither random, imagenet nor"):
        HandReconstructor("test_resnet", "mano", init=str(tmp_path / "nowhere.safetensors"))


def _config(sample_shards, mano_file, run_dir, *extra):
    return load_config(SMOKE, [f"data.datasets=[{{name: freihand, shards: {sample_shards}}}, "
                               f"{{name: ho3d, shards: {sample_shards}}}]", "finetune.init=random",
                               f"finetune.mano_model={mano_file}", f"checkpoint.dir={run_dir}",
                               "logging.report_to=none", "logging.progress=false", "loader.num_workers=0", *extra])


@pytest.mark.parametrize("head", ["mano", "2p5d"])
def test_the_loss_goes_down_on_a_fixed_batch(sample_shards, mano_file, tmp_path, head):
    cfg = _config(sample_shards, mano_file, tmp_path, f"finetune.head={head}", "finetune.refine=true")
    task = FinetuneTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(sweep_batches(cfg.data, max_items=8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = task.loss(model(model_input(batch, cfg.data.out_size), **task.model_kwargs(batch)), batch)["total"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses


def test_the_sweep_covers_every_labelled_frame_once(eval_shards, sample):
    """The sample FreiHAND evaluation split: every sample once, with the generator's own 3D joints."""
    truth = sample[1]["freihand"]["evaluation"]
    data = StreamConfig((DatasetSpec("freihand", str(eval_shards)),), mode="finetune", batch_size=2, out_size=64)
    batches = list(sweep_batches(data))
    kp3d = torch.cat([b["kp3d"][:, 0] for b in batches]).numpy()
    assert [len(b["clip"]) for b in batches] == [2] * (len(kp3d) // 2) + ([1] if len(kp3d) % 2 else [])
    assert len(kp3d) == len(truth["kp3d"])
    assert np.allclose(np.sort(kp3d.reshape(len(kp3d), -1), axis=0),
                       np.sort(np.asarray(truth["kp3d"]).reshape(len(kp3d), -1), axis=0), atol=1e-6)


def test_finetune_then_evaluate_writes_results_report_and_plots(sample, sample_shards, eval_shards, mano_file,
                                                                 tmp_path):
    run_dir = tmp_path / "run"
    progress = train(_config(sample_shards, mano_file, run_dir))
    assert progress.step == 8
    for name in ("best.safetensors", "model.safetensors", "data_split.json", "config.yaml", "train.log",
                 "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val_pa_mpjpe" in r for r in records) and all("time" in r for r in records)
    out = tmp_path / "evaluation"
    metrics = evaluate_run(run_dir, str(eval_shards), "freihand", out, weights="best")
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["pa_mpjpe"] == pytest.approx(metrics["pa_mpjpe"])
    assert {"pa_mpjpe", "pa_mpvpe", "ra_mpjpe", "f5_pa", "f15_pa", "epe_2d_px"} <= metrics.keys()
    assert "mpjpe" not in metrics  # the MANO head has no absolute depth
    assert "TempCLR Table 2" in (out / "report.md").read_text()
    for png in ("pck.png", "per_joint.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    order = sample[0] / "ho3d" / "evaluation.txt"
    ho3d = evaluate_run(run_dir, str(sample_shards), "ho3d", tmp_path / "ho3d", ho3d_order=str(order))
    assert "pa_mpjpe" in ho3d  # the training sequences are labelled; the evaluation ones go to the server
    with zipfile.ZipFile(tmp_path / "ho3d" / "pred.zip") as z:
        joints, verts = json.loads(z.read("pred.json"))
    assert len(joints) == len(verts) == len(order.read_text().split())
    assert np.asarray(joints).shape[1:] == (21, 3) and np.asarray(verts).shape[1:] == (778, 3)
    with pytest.raises(ConfigError, match="no such weights file"):
        evaluate_run(run_dir, str(eval_shards), "freihand", out, weights=str(tmp_path / "none.safetensors"))
