"""Parameter groups by module type, LARS's trust ratio against a hand computation, and the schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.train.config import OptimConfig
from pipeline.train.optim import build_optimizer, build_scheduler, split_parameters, warmup_cosine


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.weird_name_norm = nn.BatchNorm2d(4)  # names never matter
        self.bn_named_linear = nn.Linear(4, 2)
        self.ln = nn.LayerNorm(2)


def test_exempt_parameters_are_found_by_module_type():
    net = Net()
    decayed, exempt = split_parameters(net)
    assert {id(p) for p in decayed} == {id(net.conv.weight), id(net.bn_named_linear.weight)}
    assert {id(p) for p in exempt} == {id(net.conv.bias), id(net.weird_name_norm.weight),
                                       id(net.weird_name_norm.bias), id(net.bn_named_linear.bias),
                                       id(net.ln.weight), id(net.ln.bias)}


def test_lars_scales_each_gradient_by_the_trust_ratio():
    net = Net()
    opt = build_optimizer(net, OptimConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.1, lars=True,
                                           lars_eta=0.01), lr=1.0)
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    w = net.conv.weight.detach().clone()
    b = net.conv.bias.detach().clone()
    opt.step()
    g = 0.5 + 0.1 * w
    expected = w - 0.01 * w.norm() / g.norm() * g
    assert torch.allclose(net.conv.weight, expected, atol=1e-6)
    assert torch.allclose(net.conv.bias, b - 0.5, atol=1e-6)  # exempt: plain SGD, no decay, no trust ratio


def test_warmup_then_cosine_per_optimiser_step():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    net = Net()
    opt = build_optimizer(net, OptimConfig(name="adam", lr=2.0), lr=2.0)
    sched = build_scheduler(opt, 4, 20)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0 * 0.5 * (1 + math.cos(math.pi / 16))])
