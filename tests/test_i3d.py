"""I3D: the piergiaj state-dict layout, strict checkpoint loading, SAME padding, shapes, clip features."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from models.clips import ClipProtocol
from models.i3d import I3D, MaxPool3dSame, Unit3D, same_padding, scale_channels
from tests.i3d_layout import (
    MIXED,
    REFERENCE_NUM_PARAMETERS,
    REFERENCE_NUM_TENSORS,
    is_parameter,
    reference_layout,
)


@pytest.fixture(scope="module")
def standard() -> I3D:
    torch.manual_seed(0)
    return I3D().eval()


@pytest.fixture(scope="module")
def small() -> I3D:
    torch.manual_seed(0)
    return I3D(width=0.25).eval()


def _random_reference_checkpoint() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    checkpoint = {}
    for key, shape in reference_layout().items():
        tensor = torch.randn(shape, generator=generator) * 0.05
        if key.endswith("running_var"):
            tensor = torch.rand(shape, generator=generator) + 0.5
        checkpoint[key] = tensor
    return checkpoint


def test_state_dict_is_exactly_the_reference_layout(standard: I3D) -> None:
    ours = {key: tuple(value.shape) for key, value in standard.state_dict().items()}
    reference = reference_layout()
    assert len(reference) == REFERENCE_NUM_TENSORS
    assert ours == reference
    assert list(ours) == list(reference)  # same order too
    assert sum(p.numel() for p in standard.parameters()) == REFERENCE_NUM_PARAMETERS
    assert sum(math.prod(shape) for key, shape in reference.items() if is_parameter(key)) == (
        REFERENCE_NUM_PARAMETERS
    )


def test_reference_checkpoint_loads_strictly_and_is_used(tmp_path) -> None:
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(_random_reference_checkpoint(), path)
    checkpoint = torch.load(path, weights_only=True)
    model = I3D().eval()
    clip = torch.rand(1, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        before = model.forward_features(clip)
        result = model.load_state_dict(checkpoint, strict=True)
        after = model.forward_features(clip)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.Mixed_4c.b1b.conv3d.weight, checkpoint["Mixed_4c.b1b.conv3d.weight"])
    assert torch.equal(model.Conv3d_1a_7x7.bn.running_var, checkpoint["Conv3d_1a_7x7.bn.running_var"])
    assert torch.equal(model.logits.conv3d.bias, checkpoint["logits.conv3d.bias"])
    assert not torch.allclose(before, after, atol=1e-3)


def test_checkpoint_with_batchnorm_counters_also_loads_strictly(small: I3D) -> None:
    checkpoint = dict(small.state_dict())
    bn_prefixes = [key.removesuffix("running_mean") for key in checkpoint if key.endswith("running_mean")]
    checkpoint.update({prefix + "num_batches_tracked": torch.tensor(7) for prefix in bn_prefixes})
    model = I3D(width=0.25)
    model.load_state_dict(checkpoint, strict=True)
    assert "Conv3d_1a_7x7.bn.num_batches_tracked" not in model.state_dict()


def test_strict_loading_still_reports_a_missing_key(small: I3D) -> None:
    checkpoint = dict(small.state_dict())
    del checkpoint["Mixed_5c.b3b.bn.running_mean"]
    with pytest.raises(RuntimeError, match="Mixed_5c.b3b.bn.running_mean"):
        I3D(width=0.25).load_state_dict(checkpoint, strict=True)


@pytest.mark.parametrize("frames, size", [(16, 224), (16, 112), (8, 64)])
def test_features_are_1024_per_clip(standard: I3D, frames: int, size: int) -> None:
    with torch.no_grad():
        features = standard.forward_features(torch.rand(1, 3, frames, size, size) * 2 - 1)
    assert features.shape == (1, 1024)
    assert torch.isfinite(features).all()


def test_width_scales_channels_with_the_same_keys(small: I3D) -> None:
    assert [scale_channels(c, 1.0) for table in MIXED.values() for c in table] == [
        c for table in MIXED.values() for c in table
    ]
    assert (scale_channels(16, 0.25), scale_channels(48, 0.25), scale_channels(384, 0.25)) == (8, 16, 96)
    assert small.feature_dim == 96 + 96 + 32 + 32  # Mixed_5c (384, 384, 128, 128) at width 0.25
    assert I3D(width=0.5).feature_dim == 512
    assert set(small.state_dict()) == set(reference_layout())
    with torch.no_grad():
        assert small.forward_features(torch.rand(2, 3, 8, 32, 32) * 2 - 1).shape == (2, 256)
        assert small(torch.rand(2, 3, 8, 32, 32) * 2 - 1).shape == (2, 400)


def test_logits_use_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = I3D(num_classes=5, width=0.25)
    clip = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    model.train()
    assert not torch.allclose(model(clip), model(clip))
    model.eval()
    assert torch.equal(model(clip), model(clip))


def test_same_padding_amounts() -> None:
    assert same_padding(5, 3, 2) == (1, 1)
    assert same_padding(6, 3, 2) == (0, 1)
    assert same_padding(224, 7, 2) == (2, 3)  # Conv3d_1a_7x7 on a 224 crop
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(7, 2, 2) == (0, 1)  # MaxPool3d_5a_2x2 on an odd size
    assert same_padding(8, 1, 1) == (0, 0)


def _line(values: list[float], dim: int) -> torch.Tensor:
    """A (1, 1, T, H, W) tensor that varies along ``dim`` (2, 3 or 4) and has size 1 elsewhere."""
    shape = [1, 1, 1, 1, 1]
    shape[dim] = len(values)
    return torch.tensor(values).view(shape)


def _along(dim: int, value: int) -> tuple[int, int, int]:
    triple = [1, 1, 1]
    triple[dim - 2] = value
    return tuple(triple)


# size 5: pad (1, 1) -> windows [0 x1 x2], [x2 x3 x4], [x4 x5 0]; size 6: pad (0, 1) -> [x1 x2 x3],
# [x3 x4 x5], [x5 x6 0]. With x = 1..n the window sums are below; with x = -1..-n the maxima.
@pytest.mark.parametrize("dim", [2, 3, 4])
@pytest.mark.parametrize(
    "size, conv_sums, pool_maxima", [(5, [3, 9, 9], [0, -2, 0]), (6, [6, 12, 11], [-1, -3, 0])]
)
def test_same_padded_conv_and_pool_match_hand_computation(
    dim: int, size: int, conv_sums: list[float], pool_maxima: list[float]
) -> None:
    unit = Unit3D(1, 1, _along(dim, 3), _along(dim, 2), batch_norm=False, activation=False)
    with torch.no_grad():
        unit.conv3d.weight.fill_(1.0)
        ramp = [float(i) for i in range(1, size + 1)]
        assert torch.equal(unit(_line(ramp, dim)), _line(conv_sums, dim))
    pool = MaxPool3dSame(_along(dim, 3), _along(dim, 2))
    assert torch.equal(pool(_line([-v for v in ramp], dim)), _line(pool_maxima, dim))


def test_extract_clip_features_core_protocol_matches_clip_by_clip(small: I3D) -> None:
    torch.manual_seed(2)
    video = torch.rand(3, 103, 64, 64) * 2 - 1
    protocol = ClipProtocol.core_mtl()
    with torch.no_grad():
        features = small.extract_clip_features(video, protocol)
        one_by_one = torch.stack(
            [small.forward_features(video[None, :, s : s + protocol.length]) for s in protocol.starts], dim=1
        )
    assert features.shape == (1, 10, small.feature_dim)
    torch.testing.assert_close(features, one_by_one, atol=1e-5, rtol=1e-4)


def test_extract_clip_features_chunks_a_batch_like_split(small: I3D) -> None:
    torch.manual_seed(3)
    videos = torch.rand(2, 3, 103, 32, 32) * 2 - 1
    protocol = ClipProtocol.tpt()
    with torch.no_grad():
        chunked = small.extract_clip_features(videos, protocol, batch_size=7)
        reference = small.forward_features(protocol.split(videos)).view(2, protocol.num_clips, -1)
    assert chunked.shape == (2, 20, 256)
    torch.testing.assert_close(chunked, reference, atol=1e-5, rtol=1e-4)


def test_mirror_protocol_averages_each_clip_with_its_mirror_image(small: I3D) -> None:
    torch.manual_seed(4)
    videos = torch.rand(2, 3, 103, 32, 32) * 2 - 1
    plain, mirrored = ClipProtocol.core_mtl(), replace(ClipProtocol.core_mtl(), mirror=True)
    with torch.no_grad():
        averaged = small.extract_clip_features(videos, mirrored, batch_size=7)
        reference = (small.extract_clip_features(videos, plain) + small.extract_clip_features(videos.flip(-1), plain)) / 2
    torch.testing.assert_close(averaged, reference, atol=1e-5, rtol=1e-4)
    assert plain.to_dict() == {"length": 16, "starts": list(plain.starts)}  # recorded form of older models
    assert ClipProtocol.from_dict(mirrored.to_dict()) == mirrored
    assert ClipProtocol.from_dict(plain.to_dict()) == plain


def test_channels_last_layout_changes_no_value(small: I3D) -> None:
    contiguous = I3D(width=small.width, channels_last=False).eval()
    contiguous.load_state_dict(small.state_dict())
    video = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(small.forward_features(video), contiguous.forward_features(video),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "video, message",
    [
        (torch.rand(3, 103, 32, 32) * 255, r"expects input in \[-1, 1\]"),
        (torch.full((3, 103, 32, 32), float("nan")), r"expects input in \[-1, 1\]"),
        (torch.zeros(3, 90, 32, 32), "needs 102 frames"),
        (torch.zeros(1, 103, 32, 32), "3 channels"),
        (torch.zeros(103, 32, 32), r"\(C, T, H, W\)"),
    ],
)
def test_extract_clip_features_rejects_bad_video(small: I3D, video: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small.extract_clip_features(video, ClipProtocol.core_mtl())


def test_range_check_can_be_disabled_for_other_normalisations(small: I3D) -> None:
    imagenet_like = torch.rand(3, 103, 32, 32) * 4.7 - 2.1
    with torch.no_grad():
        features = small.extract_clip_features(imagenet_like, ClipProtocol.core_mtl(), check_range=False)
    assert features.shape == (1, 10, 256)


def test_bad_constructor_arguments_and_inputs_are_value_errors(small: I3D) -> None:
    with pytest.raises(ValueError, match="width"):
        I3D(width=0)
    with pytest.raises(ValueError, match="batch_size"):
        small.extract_clip_features(torch.zeros(3, 103, 32, 32), ClipProtocol.core_mtl(), batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        small.forward_features(torch.zeros(1, 1, 8, 32, 32))
