"""Training profiles: everything that decides a model's architecture and training recipe, as data.

A profile names the preprocessing, the clip protocol, the backbone's width and how it is prepared
(``BackboneTrainConfig``), and the head's training configuration. ``training/pipeline.py`` runs one;
``aqa train --profile NAME`` picks one from :data:`PROFILES`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from models.clips import ClipProtocol
from models.pcln import MIN_FRAMES
from training.train_core import CoReTrainConfig
from training.train_pcln import PCLNTrainConfig
from training.train_tpt import TPTTrainConfig
from video.localise import MotionWindow
from video.preprocessing import Preprocessing


@dataclass(frozen=True)
class BackboneTrainConfig:
    """How the backbone is prepared before features are cached (``training/backbone.py``)."""

    epochs: int = 0  # 0: keep the weights, only re-estimate BatchNorm statistics
    batch_size: int = 8
    clips_per_step: int = 3
    temporal_jitter: int = 3
    resample_jitter: float = 0.0  # > 0: each step resamples a video's T frames from 2T - 1 cached ones
    autocast_bfloat16: bool = False  # forward passes of fine-tuning in bfloat16 (weights, loss, optimizer in float32)
    lr: float = 2e-3
    action_class_weight: float = 0.0  # > 0: add this times the action-class cross-entropy to the regression loss
    validate_every: int = 1  # epochs between validation probes (the last epoch is always validated)
    weight_decay: float = 1e-4
    batchnorm_videos: int = 64
    seed: int = 0



HeadName = Literal["core", "tpt", "pcln"]
HEADS: tuple[str, ...] = ("core", "tpt", "pcln")
HEAD_TITLES = {"core": "CoRe", "tpt": "TPT", "pcln": "PCLN"}


@dataclass(frozen=True)
class TrainingProfile:
    """Everything that decides a model's architecture and training recipe."""

    name: str
    description: str
    preprocessing: Preprocessing
    clips: ClipProtocol
    backbone_width: float
    backbone: BackboneTrainConfig
    head: CoReTrainConfig
    num_exemplars: int = 10
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    tpt: TPTTrainConfig = field(default_factory=TPTTrainConfig)
    pcln: PCLNTrainConfig = field(default_factory=PCLNTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "preprocessing": self.preprocessing.to_dict(), "clips": self.clips.to_dict(),
            "backbone_width": self.backbone_width, "backbone": asdict(self.backbone), "head": self.head.to_dict(),
            "num_exemplars": self.num_exemplars, "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction, "tpt": self.tpt.to_dict(), "pcln": self.pcln.to_dict(),
        }


PROFILES: dict[str, TrainingProfile] = {
    "cpu": TrainingProfile(
        name="cpu",
        description="CPU demo profile: I3D at width 0.25 (D=256) on 112x112 crops, CoRe's 10 x 16-frame clips "
        "over 103 frames.",
        preprocessing=Preprocessing(num_frames=103, resize=128, crop=112, normalization="kinetics"),
        clips=ClipProtocol.core_mtl(),
        backbone_width=0.25,
        backbone=BackboneTrainConfig(epochs=0),
        head=CoReTrainConfig(),
    ),
    "kinetics": TrainingProfile(
        name="kinetics",
        description="Reference profile: full I3D (D=1024) on 224x224 crops, CoRe's clips; start from Kinetics "
        "weights (`--backbone-weights`) on a GPU.",
        preprocessing=Preprocessing(num_frames=103, resize=256, crop=224, normalization="kinetics"),
        clips=ClipProtocol.core_mtl(),
        backbone_width=1.0,
        backbone=BackboneTrainConfig(epochs=0),
        head=CoReTrainConfig(epochs=200),
    ),
    "tiny": TrainingProfile(
        name="tiny",
        description="Test profile: a very small I3D on 32x32 crops, 2 clips of 8 frames; seconds to train.",
        preprocessing=Preprocessing(num_frames=16, resize=40, crop=32, normalization="kinetics"),
        clips=ClipProtocol.strided(16, 8, 8),
        backbone_width=0.125,
        backbone=BackboneTrainConfig(epochs=0, batchnorm_videos=8),
        head=CoReTrainConfig(hidden=32, depth=2, epochs=10, batch_size=8, eval_every=5),
        num_exemplars=3,
        validation_fraction=0.2,
        test_fraction=0.2,
        tpt=TPTTrainConfig(d_model=32, ffn_dim=32, head_hidden=16, self_attention_heads=4, epochs=6, batch_size=8,
                           eval_every=3),
        pcln=PCLNTrainConfig(temporal_channels=16, regression_hidden=(32, 16), pair_channels=8, conv_channels=(4, 8),
                             epochs=6, batch_size=8, lr=1e-3, eval_every=3),
    ),
}

# The demo's profile. The backbone at 64 px is cheap enough to fine-tune end to end on the CPU, and it
# reads the whole dive at once: 32 frames sampled uniformly over the video as one clip, so every training
# step sees take-off, flight, entry and splash together. (Averaging 10 x 16-frame clips, CoRe's protocol,
# asks each clip to predict the whole dive's execution from a part of it: three random clips of 103 frames
# reached a validation probe of 0.39 in 30 epochs, 1,900 s; one 32-frame clip reached 0.46 in 10 epochs,
# 200 s, on the same 1,050 dives.) Over-fitting then limits it, so the demo renders more dives: the probe
# plateaued at 0.45-0.56 on 1,050 training dives (epochs 23-33 of 50, stopped there while the training
# loss kept falling), ended at 0.63 on 2,800 (30 epochs) and at 0.68 on 5,600 (16 epochs). Averaging each
# feature with its mirror image's (the fine-tuning flips clips at random) raised the 5,600-dive model's
# fresh-set execution Spearman from 0.620 to 0.640 with the same weights and head, for twice the backbone work.
# At about the same compute, 48 frames (probe 0.50) or 80 px crops (0.46) lost to these 32 frames at 64 px (0.56).
# The 64 px crop is the centre half of the frame (short side resized to 128), where the tracking camera keeps
# the diver, at the scale of the renderer's 112 px view: at the same compute it reached a probe of 0.576
# against 0.551 for the centre two thirds (resize 96) and 0.520 for the whole framing (resize 72), reading
# rotation, splash and height better (README), on 2,800 dives in 12 epochs; on the demo's 5,600 in 16 epochs the
# probe ended where the whole framing's had (0.701 against 0.702). Fine-tuning steps run in bfloat16 (1.3 x
# cheaper, same probe). The clip is cut to the span that moves first (``MotionWindow``, video/localise.py):
# uniform sampling over the whole video put 10 of the 32 frames in the flight, the localised span puts 18.
# With it the demo trains on 8,000 dives for 7 epochs (a 43-minute build) and beat the previous demo (9,600
# dives, 10 epochs, no localiser) on every set: fresh-set final / execution Spearman 0.853 / 0.720 against
# 0.826 / 0.671, validation probe 0.798 against 0.726 (README).
PROFILES["cpu-finetune"] = replace(
    PROFILES["cpu"], name="cpu-finetune",
    description="CPU demo profile: I3D at width 0.25 (D=256) on 64x64 centre crops of frames resized to 128 "
    "reading the dive as one clip of 32 frames sampled over the span of the video that moves (its feature averaged "
    "with its mirror image's), fine-tuned end to end by execution regression in bfloat16, then CoRe.",
    preprocessing=Preprocessing(num_frames=32, resize=128, crop=64, normalization="kinetics",
                                motion_window=MotionWindow()),
    clips=ClipProtocol.strided(32, 32, 32, mirror=True),
    backbone=BackboneTrainConfig(epochs=7, batch_size=16, clips_per_step=1, lr=1e-3, autocast_bfloat16=True),
    test_fraction=0.1,
)

PROFILES["tiny-finetune"] = replace(
    PROFILES["tiny"], name="tiny-finetune",
    description="Test profile for backbone fine-tuning: the tiny I3D, 2 epochs, resampled frames, mirror-averaged "
    "clips.",
    clips=ClipProtocol.strided(16, 8, 8, mirror=True),
    backbone=BackboneTrainConfig(epochs=2, batch_size=4, clips_per_step=1, batchnorm_videos=8, resample_jitter=2.0),
)

# The same profiles with TPT's clip protocol, for the heads that read the clip sequence: TPT (reference:
# 20 clips of 8 frames) and PCLN (needs >= 16 time steps). The tiny variant reads 19 frames as 16 clips
# of 4 frames.
for _name in ("cpu", "kinetics"):
    PROFILES[f"{_name}-tpt"] = replace(
        PROFILES[_name], name=f"{_name}-tpt", clips=ClipProtocol.tpt(),
        description=f"The {_name} profile with TPT's clip protocol (20 clips of 8 frames, stride 5, over 103 "
        "frames), for the TPT and PCLN heads.",
    )
PROFILES["tiny-tpt"] = replace(
    PROFILES["tiny"], name="tiny-tpt", description="Test profile for TPT and PCLN: the tiny I3D, 16 clips of 4 frames.",
    preprocessing=replace(PROFILES["tiny"].preprocessing, num_frames=19), clips=ClipProtocol.strided(19, 4, 1),
)


def check_head(head: str, profile: TrainingProfile) -> None:
    """Raise ValueError when ``head`` is unknown or cannot read ``profile``'s clips."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if head == "pcln" and profile.clips.num_clips < MIN_FRAMES:
        raise ValueError(f"PCLN needs at least {MIN_FRAMES} clips per video and profile {profile.name!r} gives "
                         f"{profile.clips.num_clips}; use a profile with TPT's clip protocol "
                         f"({', '.join(n for n in PROFILES if n.endswith('-tpt'))})")


