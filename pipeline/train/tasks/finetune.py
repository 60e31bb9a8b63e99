"""Supervised fine-tuning of a hand reconstructor (TempCLR's MANO head or PeCLR's 2.5D head) from a random,
ImageNet or pre-trained encoder: plain accumulation of the supervised losses (with `finetune.temporal`, on clips
of frames plus the temporal losses of pipeline/objectives/temporal.py), validation every
`finetune.val_every_steps` steps on `data.split: val` (rank 0; the other ranks wait), the best model by
validation PA-MPJPE kept as `best.safetensors`, the last as `model.safetensors`."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from pipeline.atomic import atomic_write_text
from pipeline.errors import ConfigError
from pipeline.evaluate.predict import evaluate_stream
from pipeline.evaluate.sweep import sweep_batches
from pipeline.models.heads import normalised_to_pixels, pixels_to_normalised, weak_perspective
from pipeline.models.keypoints25d import reconstruct_3d, to_25d
from pipeline.models.reconstructor import HandReconstructor, MANOKinematics
from pipeline.objectives.supervised import keypoint25d_loss, mano_loss
from pipeline.objectives.temporal import temporal_loss
from pipeline.stream import StreamConfig
from pipeline.stream.splits import split_record
from pipeline.train.config import TrainConfig
from pipeline.train.step import StepFns
from pipeline.train.tasks.base import Task

BEST, LAST = "best.safetensors", "model.safetensors"


def view0(batch: dict, key: str) -> torch.Tensor:
    """The single view of a fine-tuning batch's per-view field."""
    return batch[key][:, 0]


def views(batch: dict, key: str) -> torch.Tensor:
    """A per-view field [B, V, ...] as [B*V, ...], the order of the model's input (model_input)."""
    return batch[key].flatten(0, 1)


def weak_perspective_root(stage: dict, K: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 1, 3] camera-frame position of the wrist implied by the weak-perspective camera and the crop's K:
    a metre at depth Z spans fx / Z pixels and s * size / 2 in the camera's normalised units, so
    Z = 2 fx / (s size); the wrist's pixel is the projection of the root (s t) and is lifted to depth Z."""
    z = 2.0 * K[:, 0, 0] / (stage["cam_scale"].float() * size)
    uv = normalised_to_pixels(stage["cam_scale"].float()[:, None] * stage["cam_t"].float(), size)
    ray = torch.linalg.solve(K, torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1).unsqueeze(-1)).squeeze(-1)
    return (ray / ray[:, 2:3] * z[:, None]).unsqueeze(1)


class FinetuneTask(Task):
    name = "finetune"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.f = cfg, cfg.finetune
        self.mano = MANOKinematics(self.f.mano_model, self.f.tips) if self.f.head == "mano" else None
        if self.mano is None and {"motion", "shape"} & self.f.temporal.keys():
            raise ConfigError("finetune.temporal motion and shape act on MANO rotations and shape: head mano only")
        if {"motion", "accel"} & self.f.temporal.keys() and cfg.data.sequence_length < 3:
            raise ConfigError(f"finetune.temporal motion and accel are 0 on clips of fewer than 3 frames; "
                              f"data.sequence_length is {cfg.data.sequence_length}")
        self.best = math.inf
        self.history: list[dict] = []

    # the model and its forward
    def build_model(self) -> nn.Module:
        m, f = self.cfg.model, self.f
        model = HandReconstructor(m.backbone, f.head, f.init, f.stages, f.hidden, f.refine)
        return model.to(memory_format=torch.channels_last) if m.channels_last else model

    def model_kwargs(self, batch: dict) -> dict:
        if self.f.head == "2p5d" and self.f.refine:
            return {"K": views(batch, "K").float(), "size": self.cfg.data.out_size}
        return {}

    def to(self, device: torch.device) -> FinetuneTask:
        if self.mano is not None:
            self.mano.to(device)
        return self

    # losses
    def loss(self, out, batch: dict) -> dict[str, torch.Tensor]:
        """Supervised terms on every view (unlabelled ones masked), plus the temporal terms over each item's views
        when `finetune.temporal` is set (the stream then gives clips of frames)."""
        size, labelled = self.cfg.data.out_size, views(batch, "labelled")
        kp2d, kp3d = views(batch, "kp2d").float(), views(batch, "kp3d").float()
        if self.mano is not None:
            stage = out[-1]
            joints, _ = self.mano(stage["rotmat"], stage["betas"])
            joints = joints - joints[:, :1]
            fhm = batch["flat_hand_mean"].repeat_interleave(batch["labelled"].shape[1])
            targets = {"joints2d": pixels_to_normalised(kp2d, size), "joints3d": kp3d, "labelled": labelled,
                       "pose": self.mano.absolute_pose(views(batch, "mano_pose"), fhm),
                       "betas": views(batch, "mano_shape").float()}
            parts = mano_loss(stage, weak_perspective(joints, stage["cam_scale"], stage["cam_t"]), joints, targets,
                              self.f.weights)
            return self._temporal(parts, batch, rotmat=stage["rotmat"], betas=stage["betas"], joints=joints)
        uv, z_rel, scale = to_25d(kp3d, views(batch, "K").float())
        targets = {"uv": pixels_to_normalised(uv, size), "z_rel": z_rel, "labelled": labelled,
                   "z_root": kp3d[:, 0, 2] / scale}
        parts = keypoint25d_loss(out, targets, self.f.weights)
        # the 2.5D head has no metric depth without labels: its accel acts on the root-relative 2.5D itself (uv in
        # normalised crop coordinates, z_rel in bone lengths), the units of its own loss
        pose25d = torch.cat([out["uv"] - out["uv"][:, :1], out["z_rel"][..., None]], dim=-1)
        return self._temporal(parts, batch, joints=pose25d)

    def _temporal(self, parts: dict[str, torch.Tensor], batch: dict, **preds: torch.Tensor) -> dict[str, torch.Tensor]:
        """`parts` plus the temporal terms on the predictions [B*V, ...] regrouped per clip [B, V, ...]."""
        if not self.f.temporal:
            return parts
        shape = batch["labelled"].shape
        terms = temporal_loss(self.f.temporal, **{k: v.float().reshape(*shape, *v.shape[1:]) for k, v in preds.items()})
        total = terms.pop("total")
        return {**parts, **terms, "total": parts["total"] + total}

    def gradients(self, model: nn.Module, micro: list[dict], fns: StepFns) -> tuple[float, dict]:
        """Plain accumulation (no cross-item terms: nothing to gather); gradients synchronised on the last."""
        total, terms = 0.0, {}
        for i, batch in enumerate(micro):
            with fns.no_sync() if i < len(micro) - 1 else contextlib.nullcontext():
                parts = self.loss(fns.forward(batch), batch)
                fns.backward(parts["total"] / len(micro))
            total += float(parts["total"].detach()) / len(micro)
            for k, v in parts.items():
                if k != "total":
                    terms[f"loss_{k}"] = terms.get(f"loss_{k}", 0.0) + float(v.detach()) / len(micro)
        return total, terms

    # predictions (validation and evaluation)
    @torch.no_grad()
    def predict(self, out, batch: dict) -> dict[str, torch.Tensor]:
        """Joints [B, 21, 3] (metres; MANO head: root-relative, no absolute depth; 2.5D head: camera frame with
        the ground-truth bone length as scale, flagged by `absolute`), vertices (MANO head) and 2D keypoints in
        output-crop pixels."""
        size = self.cfg.data.out_size
        if self.mano is not None:
            stage = out[-1]
            joints, verts = self.mano(stage["rotmat"], stage["betas"])
            root = joints[:, :1]
            kp2d = normalised_to_pixels(weak_perspective(joints - root, stage["cam_scale"], stage["cam_t"]), size)
            placed = weak_perspective_root(stage, view0(batch, "K").float(), size)
            return {"joints": joints - root, "verts": verts - root, "kp2d": kp2d,
                    "joints_camera": joints - root + placed, "verts_camera": verts - root + placed}
        K, kp3d = view0(batch, "K").float(), view0(batch, "kp3d").float()
        _, _, scale = to_25d(kp3d, K)  # the ground-truth bone length (finetune_eval.md §9 #8)
        uv = normalised_to_pixels(out["uv"].float(), size)
        z_root = out["z_root"] if "z_root" in out else kp3d[:, 0, 2] / scale
        return {"joints": reconstruct_3d(uv, out["z_rel"].float(), z_root.float(), K, scale), "kp2d": uv}

    @property
    def absolute(self) -> bool:
        """Whether predicted joints carry an absolute position (unaligned errors mean something)."""
        return self.mano is None

    # validation, checkpoints of the best model, export
    def state_dict(self) -> dict:
        return {"best": self.best, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.history = state["best"], list(state["history"])

    def tracker_config(self) -> dict:
        return {"head": self.f.head, "init": self.f.init}

    def validation_data(self) -> StreamConfig:
        return replace(self.cfg.data, split="val")

    def start(self, trainer) -> None:
        """Record the split rules; make sure the validation split has a labelled frame before training."""
        if trainer.accelerator.is_main_process:
            record = {"split": split_record(self.cfg.data), "init": self.f.init, "head": self.f.head}
            atomic_write_text(trainer.run_dir / "data_split.json", json.dumps(record, indent=1))
            next(sweep_batches(self.validation_data(), max_items=1))
        trainer.accelerator.wait_for_everyone()

    def after_step(self, trainer, last: bool) -> None:
        step = trainer.progress.step
        if not last and step % self.f.val_every_steps:
            return
        if trainer.accelerator.is_main_process:
            self._validate(trainer, step)
        trainer.accelerator.wait_for_everyone()

    def _validate(self, trainer, step: int) -> None:
        metrics = evaluate_stream(trainer.model, self, self.validation_data(), trainer.device, self.f.val_items)
        values = {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}
        trainer.metrics.record(step, values)
        self.history.append({"step": step, **values})
        score = metrics.get("pa_mpjpe", math.nan)
        if math.isfinite(score) and score < self.best:
            self.best = score
            self.export(trainer.model, trainer.run_dir / BEST, {"step": step, "val_pa_mpjpe": score})
            trainer.metrics.print(f"step {step}: validation PA-MPJPE {score:.2f} mm, best so far: {BEST}")

    def export(self, model: nn.Module, path: Path, info: dict) -> Path:
        """The whole reconstructor (encoder + head) as safetensors, with what is needed to rebuild it."""
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        meta = {"backbone": self.cfg.model.backbone, "head": self.f.head, "stages": str(self.f.stages),
                "hidden": json.dumps(list(self.f.hidden)), "refine": str(self.f.refine), "tips": self.f.tips,
                **{k: str(v) for k, v in info.items()}}
        tmp = path.with_name(path.name + ".tmp")
        safetensors.torch.save_file(state, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    def finish(self, model: nn.Module, run_dir: Path) -> str:
        last = self.export(model, run_dir / LAST, {})
        best = f", best {run_dir / BEST} (validation PA-MPJPE {self.best:.2f} mm)" if math.isfinite(self.best) else ""
        return f"model {last}{best}"
