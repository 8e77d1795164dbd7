"""The served backbone's inference form (``I3D.fused``): the same features as the training form to 1e-5,
on the demo model, on a full-width I3D with Kinetics-like BatchNorm statistics, and at every padding case."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from models.i3d import I3D, FusedMaxPool3d, MaxPool3dSame
from models.model_dir import ModelConfig
from models.pretrained import DEMO_MODEL_DIR
from tests.i3d_layout import reference_layout
from tests.reference_i3d import piergiaj_mixed_5c, random_checkpoint

TOLERANCE = 1e-5


def _clips(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("kernels", ["onednn", "aten"])
def test_the_demo_backbone_gives_the_same_features(kernels: str) -> None:
    config = ModelConfig.load(DEMO_MODEL_DIR)
    backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
    backbone.load_state_dict(load_file(str(DEMO_MODEL_DIR / "backbone.safetensors")))
    backbone.eval()
    clips = _clips((4, 3, 32, 64, 64), seed=0)  # the demo's clip: 32 frames of 64 x 64
    with torch.inference_mode():
        expected, fused = backbone.forward_features(clips), backbone.fused(kernels).forward_features(clips)
    assert expected.abs().max() > 0.1  # trained weights: features of order 1, not a vanishing signal
    torch.testing.assert_close(fused, expected, atol=TOLERANCE, rtol=0)


def test_a_full_width_i3d_gives_the_features_of_the_reference_port() -> None:
    """Kinetics-shaped I3D (width 1.0, 16 x 224 x 224 clips) with BatchNorm statistics that matter."""
    state = random_checkpoint(reference_layout(), seed=3)
    backbone = I3D()
    backbone.load_state_dict(state, strict=True)
    backbone.eval()
    clips = _clips((1, 3, 16, 224, 224), seed=1)
    with torch.inference_mode():
        fused = backbone.fused().forward_features(clips)
        expected = backbone.forward_features(clips)
        reference = piergiaj_mixed_5c(state, clips).mean(dim=(2, 3, 4))
    assert fused.shape == (1, 1024) and expected.abs().max() > 0.1
    torch.testing.assert_close(fused, expected, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(fused, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("padding", ["tf_same", "static_same"])
@pytest.mark.parametrize("frames, size", [(32, 64), (31, 63), (29, 61), (8, 33)])
@pytest.mark.parametrize("kernels", ["onednn", "aten"])
def test_every_padding_case_gives_the_same_features(padding: str, frames: int, size: int, kernels: str) -> None:
    """Even sizes pad the strided layers asymmetrically, odd ones symmetrically; static_same rounds up."""
    torch.manual_seed(0)
    backbone = I3D(width=0.25, padding=padding)
    state = {k: v + 0.1 * torch.rand_like(v) if k.endswith("running_var") else v
             for k, v in backbone.state_dict().items()}
    backbone.load_state_dict(state)
    backbone.eval()
    clips = _clips((2, 3, frames, size, size), seed=2)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.fused(kernels).forward_features(clips), backbone.forward_features(clips),
                                   atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("padding", ["tf_same", "static_same"])
@pytest.mark.parametrize("kernel, stride", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                                            ((3, 3, 3), (1, 1, 1))])
def test_pools_without_a_padded_copy_equal_the_padded_ones(padding: str, kernel: tuple, stride: tuple) -> None:
    pool = MaxPool3dSame(kernel, stride, padding)
    fused = FusedMaxPool3d(pool)
    for size in range(1, 12):
        x = torch.rand(1, 2, size, size + 1, size + 2)  # after a ReLU: >= 0
        assert torch.equal(fused(x), pool(x)), size


def test_the_inference_form_is_detached_from_later_training() -> None:
    backbone = I3D(width=0.25).eval()
    fused = backbone.fused()
    clips = _clips((1, 3, 8, 32, 32), seed=4)
    with torch.inference_mode():
        before = fused.forward_features(clips)
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(1.0)
    with torch.inference_mode():
        assert torch.equal(fused.forward_features(clips), before)
    assert not any(p.requires_grad for p in fused.parameters())
