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
    recalibrate_batchnorm: bool = True  # re-estimate BatchNorm statistics on training videos; False keeps them
    batchnorm_videos: int = 64
    seed: int = 0


@dataclass(frozen=True)
class EndToEndConfig:
    """Fine-tuning the backbone end to end with the head, by the head's own pair loss (``training/finetune_pairs.py``).

    The head's training config (``CoReTrainConfig`` / ``TPTTrainConfig``) gives the epochs, the queries per
    micro-batch (``batch_size``), the head's learning rates and the weight decay; the backbone's learning rate is
    the head's (CoRe ``lr``, TPT ``lr_heads``) times ``backbone_lr_factor``.
    """

    backbone_lr_factor: float = 0.1
    accumulate: int = 1  # micro-batches whose summed gradients make one optimiser step
    temporal_jitter: int = 3  # +- frames by which a draw's whole frame window moves
    random_crop: bool = True
    crop_margin: int | None = None  # None: random crops anywhere in the preprocessed frame
    horizontal_flip: bool = True
    freeze_batchnorm: bool = True  # BatchNorm layers in eval mode: statistics kept, affine parameters trained
    precision: str = "auto"  # training.device.Precision: autocast dtype of the backbone's forward pass
    workers: int = 4  # DataLoader processes decoding and augmenting videos
    cache_frames: bool = False  # decode each dive's training view once into the cache folder


class ProfileError(ValueError):
    """A profile cannot train with the given options; the message says why."""


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
    end_to_end: EndToEndConfig | None = None  # set: the backbone trains with the head (CoRe / TPT recipes)
    default_head: str = "core"  # the head `aqa train` trains when --head is not given

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "preprocessing": self.preprocessing.to_dict(), "clips": self.clips.to_dict(),
            "backbone_width": self.backbone_width, "backbone": asdict(self.backbone), "head": self.head.to_dict(),
            "num_exemplars": self.num_exemplars, "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction, "tpt": self.tpt.to_dict(), "pcln": self.pcln.to_dict(),
            "end_to_end": asdict(self.end_to_end) if self.end_to_end is not None else None,
            "default_head": self.default_head,
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

# The cpu profile with TPT's clip protocol, for the heads that read the clip sequence: TPT (reference:
# 20 clips of 8 frames) and PCLN (needs >= 16 time steps). The tiny variant reads 19 frames as 16 clips
# of 4 frames.
PROFILES["cpu-tpt"] = replace(
    PROFILES["cpu"], name="cpu-tpt", clips=ClipProtocol.tpt(),
    description="The cpu profile with TPT's clip protocol (20 clips of 8 frames, stride 5, over 103 frames), for "
    "the TPT and PCLN heads.",
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


# ------------------------------------------------------------------------------------------------------------
# The papers' recipes. Each field's source is the reference code: yuxumin/CoRe (configs/MTL_CoRe.yaml,
# tools/builder.py, tools/runner.py, tools/helper.py, datasets/MTLPair.py, utils/parser.py, utils/misc.py) and
# baiyang4/aqa_tpt (README.md's training command, utils/opt.py, the train script
# train_pairencode1_decoder_1selfatt_self8head_ffn_sp_new.py, dataloader_pair_MLT.py, utils/util.py). What
# differs from the papers' runs, and why, is in docs/reference-recipes.md.

# CoRe's input: the 103 frames ending at end_frame (MTLPair.load_video; yaml frame_length 103), stretched to
# 256 wide x 455 tall, crop 224, ImageNet mean/std (builder.get_video_trans).
REFERENCE_INPUT = Preprocessing(num_frames=103, resize=256, crop=224, normalization="imagenet",
                                sampling="window_end", stretch_to=(256, 455))

CORE_HEAD = CoReTrainConfig(
    hidden=256,  # builder.model_builder: hidden_channel = 256
    depth=4,  # yaml RT_depth: 5 levels counting the leaves = 16 leaves
    epochs=200,  # yaml max_epoch
    batch_size=1,  # yaml bs_train
    lr=1e-3,  # yaml base_lr (the regressor's); optimizer 'Adam' (builder.build_opti_sche), no scheduler
    weight_decay=0.0,  # yaml weight_decay
    leaf_activation="identity",  # helper.network_forward_train: MSE on the raw leaf outputs (paper: sigmoid)
    classification_loss="nll",  # helper: nn.NLLLoss on the leaf log-probabilities (paper: BCE)
    reduction="leaf",  # helper: nll(dir 1) + nll(dir 2) + sum over leaves and directions of per-leaf MSE means
    both_directions=True,  # Backbone.forward(is_train=True) returns both orders of every pair
    pairing="difficulty",  # yaml usingDD: True, dive_number_choosing: False (MTLPair.preprocess)
    pair_singletons=True,  # MTLPair.__getitem__ pops the query only if len(file_list) > 1
    eval_every=1,  # runner.run_net validates after every epoch (on the test split; here on validation)
)
CORE_END_TO_END = EndToEndConfig(
    backbone_lr_factor=0.1,  # yaml lr_factor: the backbone's param group at base_lr * lr_factor
    accumulate=2,  # yaml step_per_update: optimizer.step() every second batch, gradients summed
    temporal_jitter=3,  # yaml temporal_shift_min / temporal_shift_max: end_frame + randint(-3, 3)
    random_crop=True,  # get_video_trans: RandomCrop(224) of the 256 x 455 frame
    crop_margin=None,
    horizontal_flip=True,  # get_video_trans: RandomHorizontalFlip()
    freeze_batchnorm=True,  # parser --fix_bn (default True); runner applies misc.fix_bn every epoch
    workers=4,  # yaml workers
)
PROFILES["kinetics"] = TrainingProfile(
    name="kinetics",
    description="CoRe's recipe (Yu et al., ICCV 2021): Kinetics I3D (--init-backbone) fine-tuned end to end with "
    "the CoRe head's pair loss, 200 epochs, on the 103 frames ending at end_frame; for one GPU.",
    preprocessing=REFERENCE_INPUT,
    clips=ClipProtocol.core_mtl(),  # Backbone.forward: start_idx 0, 10, ..., 80, 86, 16 frames each
    backbone_width=1.0,  # I3D_backbone(I3D_class=400): the full network, D = 1024
    backbone=BackboneTrainConfig(epochs=0, recalibrate_batchnorm=False),  # the imported statistics are kept
    head=CORE_HEAD,
    end_to_end=CORE_END_TO_END,
    num_exemplars=10,  # yaml voter_number
)

# TPT's recipe, from the training command of the current README (--epoch_num=250 --bs_train=3 --num_cluster=5
# --margin_factor=3.2 --d_model=512 --d_ffn=512 on 8 GPUs) and the train script's optimiser.
PROFILES["kinetics-tpt"] = replace(
    PROFILES["kinetics"], name="kinetics-tpt",
    description="TPT's recipe (Bai et al., ECCV 2022): Kinetics I3D (--init-backbone) fine-tuned end to end with the "
    "TPT head's losses, 250 epochs, 20 clips of 8 frames over the 103 frames ending at end_frame; for one GPU.",
    clips=ClipProtocol.tpt(),  # MLTPair.load_data: start_idx 0, 5, ..., 95, 8 frames each
    default_head="tpt",
    tpt=TPTTrainConfig(
        d_model=512, ffn_dim=512,  # README --d_model=512 --d_ffn=512
        num_parts=5,  # README --num_cluster=5
        num_layers=2,  # opt.py num_layers
        num_groups=16, head_hidden=128,  # PairModel.cls / reg: Linear(d, 128), Linear(128, 16)
        epochs=250,  # README --epoch_num=250
        batch_size=3,  # README --bs_train=3 (per GPU)
        lr_decoder=1e-4, lr_heads=1e-3,  # RunPair.__init__: Adam groups (decoder, pair encoder 1e-4; cls, reg 1e-3)
        weight_decay=0.0,  # the use_pretrain=False optimiser has none
        sparsity_weight=0.05,  # train(): loss_cls + loss_reg + hinge_loss + 0.05 * var_loss
        ranking_margin=3.2, cap_ranking_margin=False,  # README --margin_factor=3.2 (MarginRankingLoss margin)
        reduction="leaf",  # train(): nll(dir 1) + nll(dir 2) + per-leaf MSE means over both directions
        pairing="difficulty",  # opt.py use_dd True: contrastive_key = 'difficulty'
        pair_singletons=True,  # MLTPair.__getitem__ pops the query only if len(contrastive_list) > 1
        eval_every=5,  # the reference evaluates on test at epochs 40, 80, 120, 150, ..., then every 3 after 180
    ),
    end_to_end=replace(
        CORE_END_TO_END,
        backbone_lr_factor=0.1,  # RunPair.__init__: backbone lr 1e-4 = lr_heads / 10
        accumulate=8,  # 8 GPUs x 3 queries under DistributedDataParallel: one step per 24 queries
    ),  # jitter, crop, flip, fix_bn: utils/util.get_video_trans, MLTPair.load_video (randint(-3, 3)), train()
)

# The CoRe recipe scaled to a CPU (the comparison with cpu-finetune in docs/reference-recipes.md): the
# reference's loss, pairing, optimiser, augmentations and frozen BatchNorm, end to end; the cpu-finetune
# profile's input and a width-0.25 I3D from random weights (statistics estimated once, then frozen), 5 epochs.
PROFILES["cpu-core"] = replace(
    PROFILES["kinetics"], name="cpu-core",
    description="CoRe's recipe scaled to the CPU: I3D width 0.25 from random weights, cpu-finetune's input (32 "
    "frames over the moving span, 64 px), fine-tuned end to end with CoRe's pair loss for 5 epochs.",
    preprocessing=PROFILES["cpu-finetune"].preprocessing,
    clips=PROFILES["cpu-finetune"].clips,
    backbone_width=0.25,
    backbone=BackboneTrainConfig(epochs=0, recalibrate_batchnorm=True),
    head=replace(CORE_HEAD, epochs=5),
    end_to_end=replace(CORE_END_TO_END, crop_margin=4, workers=1, cache_frames=True),
    validation_fraction=PROFILES["cpu-finetune"].validation_fraction,
    test_fraction=PROFILES["cpu-finetune"].test_fraction,
)

# Test profiles: the reference recipes at a tiny size (seconds per epoch).
def _tiny(name: str, description: str, frames: int, clips: ClipProtocol, **changes: Any) -> TrainingProfile:
    """``name`` without its ``tiny-`` prefix at test size: a width-0.125 I3D on 32 px crops of ``frames`` frames."""
    return replace(PROFILES[name.removeprefix("tiny-")], name=name, description=description,
                   preprocessing=replace(REFERENCE_INPUT, num_frames=frames, crop=32, stretch_to=(40, 48)),
                   clips=clips, backbone_width=0.125, num_exemplars=3, validation_fraction=0.2, test_fraction=0.2,
                   **changes)


PROFILES["tiny-kinetics"] = _tiny(
    "tiny-kinetics", "Test profile: the kinetics (CoRe) recipe on a tiny I3D, 24-frame windows at 32 px, 2 epochs.",
    24, ClipProtocol.strided(24, 8, 8), head=replace(CORE_HEAD, hidden=32, depth=2, epochs=2),
    end_to_end=replace(CORE_END_TO_END, workers=0),
)
PROFILES["tiny-kinetics-tpt"] = _tiny(
    "tiny-kinetics-tpt", "Test profile: the kinetics-tpt (TPT) recipe on a tiny I3D, 16 clips of 4 frames at 32 px, "
    "2 epochs.", 19, ClipProtocol.strided(19, 4, 1),
    tpt=replace(PROFILES["kinetics-tpt"].tpt, d_model=32, ffn_dim=32, head_hidden=16, self_attention_heads=4,
                epochs=2, eval_every=1),
    end_to_end=replace(PROFILES["kinetics-tpt"].end_to_end, accumulate=2, workers=0),
)


# What each profile cost and reached where it was measured (`aqa train --list-profiles`); the experiments
# behind them are in docs/demo-model.md. Profiles not listed have not been measured.
PROFILE_RESULTS: dict[str, str] = {
    "cpu-finetune": (
        "the demo build (2026-12-02, 2 cores): 8,000 training dives, training 34 min (2,035 s; fine-tuning 7 epochs "
        "of about 125 s in bfloat16), fresh synthetic set final / execution Spearman 0.853 / 0.720; the same build held "
        "to AVX2 (float32, 2026-12-05): 56.1 min, fine-tuning epochs of about 210 s, fresh set 0.865 / 0.713. "
        "On 1,000 dives "
        "(`aqa synth --seed 11`, 2026-12-05, 2 quiet cores): 3 min 46 s with oneDNN and ATen held to AVX2 (float32 "
        "chosen), 2 min 18 s with AVX-512 (bfloat16 chosen); test split (100 dives) final / execution Spearman "
        "0.800 / 0.436 (float32) and 0.699 / 0.356 (bfloat16) against 0.736 for difficulty alone: too few dives for "
        "this recipe"),
    "cpu": (
        "1,050 training dives (2026-12-01, 2 cores, shared): training 12 min, fresh synthetic set final / execution "
        "Spearman 0.632 / 0.133: its frozen random backbone does not see execution"),
    "cpu-tpt": (
        "1,050 training dives (2026-12-01, 2 cores, shared): TPT head 18 min, final / execution Spearman "
        "0.482 / 0.077; PCLN head 24 min, 0.579 / 0.078"),
    "kinetics": (
        "not trained here (needs Kinetics I3D weights and a GPU): about 2 h of A100 work for MTL-AQA's 200 epochs, "
        "worked out from FLOPs, not measured, and bound by decoding unless --workers is about 16 "
        "(docs/reference-recipes.md)"),
    "kinetics-tpt": (
        "not trained here (needs Kinetics I3D weights and a GPU): about 2.1 h of A100 work for 250 epochs, worked "
        "out from FLOPs, not measured (docs/reference-recipes.md)"),
    "cpu-core": (
        "1,000 synthetic dives, same split as cpu-finetune (2026-12-05, 2 cores shared, one torch thread): 811 s of "
        "CPU, test split (100 dives) final / execution Spearman 0.581 / 0.215, against cpu-finetune's 0.726 / 0.411 "
        "in 308 s of CPU side by side: five epochs of the pair loss barely train a random backbone"),
}
