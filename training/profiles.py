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
from training.compute_dtype import ComputeDtype
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
    compute_dtype: ComputeDtype = "auto"  # fine-tuning's forward passes: float32, bfloat16 autocast, or the faster here
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

# The demo's profile and `aqa train`'s default: the best recipe measured on two CPU cores. What: a width-0.25
# I3D fine-tuned end to end on 64 px centre crops, reading the dive as one 32-frame clip sampled over the
# span that moves (``MotionWindow``), its feature averaged with its mirror image's, then CoRe. Why: one clip
# over the whole dive sees take-off, flight and entry in every step (16-frame clips must guess the dive
# from a part), the localiser puts 18 of the 32 frames in the flight instead of 10, and at this compute
# more dives beat more frames or pixels. The experiments and their numbers: docs/demo-model.md.
PROFILES["cpu-finetune"] = replace(
    PROFILES["cpu"], name="cpu-finetune",
    description="CPU demo profile: I3D at width 0.25 (D=256) on 64x64 centre crops of frames resized to 128 "
    "reading the dive as one clip of 32 frames sampled over the span of the video that moves (its feature averaged "
    "with its mirror image's), fine-tuned end to end by execution regression (bfloat16 autocast where this CPU "
    "runs it faster), then CoRe.",
    preprocessing=Preprocessing(num_frames=32, resize=128, crop=64, normalization="kinetics",
                                motion_window=MotionWindow()),
    clips=ClipProtocol.strided(32, 32, 32, mirror=True),
    backbone=BackboneTrainConfig(epochs=7, batch_size=16, clips_per_step=1, lr=1e-3),
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




# What each profile cost and reached where it was measured (`aqa train --list-profiles`); the experiments
# behind them are in docs/demo-model.md. Profiles not listed have not been measured.
PROFILE_RESULTS: dict[str, str] = {
    "cpu-finetune": (
        "the demo build (2026-12-02, 2 cores): 8,000 training dives, training 34 min (2,035 s; fine-tuning 7 epochs "
        "of about 125 s in bfloat16), fresh synthetic set final / execution Spearman 0.853 / 0.720. On 1,000 dives "
        "(2026-12-05, 2 cores shared with other jobs): 101 min wall, 31 min of CPU, test split (100 dives) final / "
        "execution Spearman 0.713 / 0.426 against 0.736 for difficulty alone: too few dives for this recipe"),
    "cpu": (
        "1,050 training dives (2026-12-01, 2 cores, shared): training 12 min, fresh synthetic set final / execution "
        "Spearman 0.632 / 0.133: its frozen random backbone does not see execution"),
    "cpu-tpt": (
        "1,050 training dives (2026-12-01, 2 cores, shared): TPT head 18 min, final / execution Spearman "
        "0.482 / 0.077; PCLN head 24 min, 0.579 / 0.078"),
    "kinetics": (
        "not trained here (needs Kinetics I3D weights and a GPU); the full I3D costs 5.9 s per 103-frame video at "
        "224 px on 2 CPU cores (benchmarks/README.md)"),
}
