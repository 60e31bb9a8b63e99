"""timm backbone (any name, num_classes=0) + PeCLR's projection head, channels_last; encoder export as a
timm-compatible safetensors state dict."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import timm
import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear(F -> hidden) + BN + ReLU + Linear(hidden -> out, no bias) — PeCLR's head (2048 -> 512 -> 128 on a
    ResNet-50); the input width follows the backbone."""

    def __init__(self, in_features: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ContrastiveModel(nn.Module):
    def __init__(self, backbone: str, hidden: int = 512, out: int = 128, pretrained: bool = False,
                 **backbone_kwargs) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=pretrained, num_classes=0, **backbone_kwargs)
        self.head = ProjectionHead(self.backbone.num_features, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def freeze_norm(model: nn.Module) -> nn.Module:
    """Batch-norm layers in eval mode (running statistics, no updates) and kept there by train()."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
        m.train = lambda mode=True, m=m: m  # type: ignore[method-assign]
    return model


def build_model(backbone: str, hidden: int = 512, out: int = 128, channels_last: bool = True,
                frozen_norm: bool = False, pretrained: bool = False) -> ContrastiveModel:
    model = ContrastiveModel(backbone, hidden, out, pretrained)
    if frozen_norm:
        freeze_norm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def export_encoder(model: ContrastiveModel, path: str | Path) -> Path:
    """The backbone's state dict as safetensors, loadable with
    `timm.create_model(name, num_classes=0).load_state_dict(safetensors.torch.load_file(path))`."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.backbone.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(state, str(tmp), metadata={"timm_model": model.backbone_name})
    tmp.replace(path)
    return path
