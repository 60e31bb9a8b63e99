"""Encoders: a timm backbone plus the contrastive projection head; export for fine-tuning."""

from pipeline.models.encoder import ContrastiveModel, ProjectionHead, build_model, export_encoder, freeze_norm

__all__ = ["ContrastiveModel", "ProjectionHead", "build_model", "export_encoder", "freeze_norm"]
