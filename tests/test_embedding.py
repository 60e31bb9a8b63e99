"""The embedding report: temporal retrieval and its chance level, cosine against |Δt|, t-SNE, PeCLR's equivariance
measure, and `handclr embed-report` end to end on the sample shards."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.evaluate.embedding import (
    cosine_vs_dt,
    l_equiv,
    l_improv,
    load_encoder,
    retrieval_chance,
    temporal_retrieval,
    tsne,
)
from pipeline.models.encoder import build_model, export_encoder

CLIPS, FRAMES = 4, 20


def time_clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t of clip c at angle 0.05 t in a plane of its own: cosine cos(0.05 Δt) within a clip, 0 across."""
    clip, position = np.repeat(np.arange(CLIPS), FRAMES), np.tile(np.arange(FRAMES), CLIPS)
    emb = np.zeros((CLIPS * FRAMES, 2 * CLIPS))
    emb[np.arange(len(clip)), 2 * clip] = np.cos(0.05 * position)
    emb[np.arange(len(clip)), 2 * clip + 1] = np.sin(0.05 * position)
    return emb, clip, position


@pytest.mark.parametrize(("k", "w"), [(1, 1), (3, 3), (2, 4)])
def test_retrieval_is_one_when_nearby_times_cluster(k, w):
    emb, clip, position = time_clustered()
    assert temporal_retrieval(emb, clip, position, k, w) == 1.0


def test_retrieval_of_shuffled_embeddings_is_the_chance_level():
    emb, clip, position = time_clustered()
    # w = 2 in clips of 20 frames: 2 end frames have 2 near frames, 2 have 3, 16 have 4 -> mean 74 / 20 of N - 1 = 79
    chance = 74 / 20 / 79
    assert retrieval_chance(clip, position, 2) == pytest.approx(chance, abs=1e-12)
    rng = np.random.default_rng(0)
    scores = [temporal_retrieval(emb[rng.permutation(len(emb))], clip, position, 5, 2) for _ in range(200)]
    # A uniformly shuffled assignment makes each neighbour a uniform draw among the other frames, so the expectation
    # is exactly the chance level; one shuffle's spread is about 0.011, the mean of 200 about 0.0008.
    assert np.mean(scores) == pytest.approx(chance, abs=0.005)
    assert temporal_retrieval(emb, clip, position, 5, 2) > 10 * chance


def test_cosine_vs_dt_small_case():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-3.0, 0.0], [0.0, 5.0]])
    clip = np.array([0, 0, 0, 1, 1, 2])
    position = np.array([0, 1, 2, 0, 3, 0])
    c = cosine_vs_dt(emb, clip, position, 4)
    half = math.sqrt(0.5)  # cos(e1, (2, 2)) = cos(e0, (2, 2)); e0 . e1 = 0; clip 1's pair at Δt 3 is opposite
    np.testing.assert_array_equal(c["dt"], [1, 2, 3, 4])
    np.testing.assert_array_equal(c["pairs"], [2, 1, 1, 0])
    np.testing.assert_allclose(c["mean"][:3], [half / 2, half, -1.0])
    np.testing.assert_allclose(c["std"][:3], [half / 2, 0.0, 0.0], atol=1e-12)
    assert np.isnan(c["mean"][3]) and np.isnan(c["std"][3])


def test_tsne_shape_parameters_and_seed():
    emb, _, _ = time_clustered()
    emb = emb + np.random.default_rng(1).normal(0, 0.01, emb.shape)
    a, params = tsne(emb[:20], seed=3)
    b, _ = tsne(emb[:20], seed=3)
    assert a.shape == (20, 2)
    np.testing.assert_array_equal(a, b)
    assert params["seed"] == 3 and params["perplexity"] == pytest.approx(19 / 3) and params["pca_dims"] == 8


def blobs(size: int = 33) -> torch.Tensor:
    """Two images, one Gaussian blob per channel, well inside the frame (nothing leaves it under the transforms)."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    centres = [[(12, 14), (20, 11), (16, 21)], [(18, 18), (13, 19), (21, 14)]]
    return torch.stack([torch.stack([torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.0) for cx, cy in image])
                        for image in centres])


def centroids(images: torch.Tensor) -> np.ndarray:
    """Each channel's intensity-weighted centre (x, y) in pixels: an equivariant "2D keypoint model"."""
    size = images.shape[-1]
    grid = torch.arange(size, dtype=torch.float64)
    w = images.double().clamp(min=0)
    total = w.sum(dim=(2, 3))
    return torch.stack([(w.sum(dim=2) * grid).sum(-1) / total, (w.sum(dim=3) * grid).sum(-1) / total], -1).numpy()


def test_l_equiv_is_zero_for_an_equivariant_model_and_not_for_a_fixed_one():
    images = blobs()
    exact = l_equiv(centroids, images, [0.0, 90.0, 180.0, -90.0], [(0.0, 0.0), (3.0, -2.0)])
    assert exact.shape == (4, 2) and exact.max() < 1e-6  # right angles and whole pixels resample exactly
    assert l_equiv(centroids, images, [30.0, -55.0], [(2.5, 1.5)]).max() < 0.05  # bilinear: nearly
    points = np.array([[[16.0, 16.0], [20.0, 16.0]]] * 2)  # (16, 16) is the crop centre of a 33 px image
    fixed = l_equiv(lambda x: points, images, [0.0, 90.0], [(0.0, 0.0), (3.0, -2.0)])
    # identity 0; a translation moves every point by |t| = sqrt(13); 90° moves (20, 16) by 4 sqrt(2), the centre not
    np.testing.assert_allclose(fixed[:, 0], [0.0, 2 * math.sqrt(2)], atol=1e-9)
    assert fixed[0, 1] == pytest.approx(math.sqrt(13))
    np.testing.assert_allclose(l_improv([2.0, 4.0], [1.0, 5.0]), [0.5, -0.25])


def test_random_encoder_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = load_encoder("random", "test_resnet", seed=1)
    assert torch.rand(1) == before
    b = load_encoder("random", "test_resnet", seed=1)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_embed_report_end_to_end(sample_shards, tmp_path, capsys):
    (tmp_path / "pre").mkdir()
    encoder = export_encoder(build_model("test_resnet", hidden=16, out=8), tmp_path / "pre" / "encoder.safetensors")
    out = tmp_path / "report"
    rc = main(["embed-report", "--data", str(sample_shards), "--encoders", str(encoder), "random", "--sequences", "3",
               "--size", "32", "--k", "3", "--window", "2", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"tsne.png", "retrieval.png", "cosine_vs_dt.png", "report.json",
                                               "report.md"}
    doc = json.loads((out / "report.json").read_text())
    assert {"format", "handclr_version", "data", "settings", "retrieval_chance", "encoders", "tsne",
            "figures"} <= set(doc)
    assert doc["data"]["frames"] == 36 and len(doc["data"]["clips"]) == 3  # 3 HanCo clip samples of 12 frames
    assert list(doc["encoders"]) == ["pre", "random"]
    for e in doc["encoders"].values():
        assert e["backbone"] == "test_resnet" and 0.0 <= e["retrieval"] <= 1.0
        assert e["cosine_vs_dt"]["dt"] == list(range(1, 12))
    assert doc["retrieval_chance"] == pytest.approx(retrieval_chance(np.repeat(np.arange(3), 12),
                                                                     np.tile(np.arange(12), 3), 2))
    assert "| pre |" in (out / "report.md").read_text()
    assert main(["embed-report", "--data", str(sample_shards), "--encoders", "random", "--out", str(out)]) == 2
    assert "--backbone" in capsys.readouterr().err
