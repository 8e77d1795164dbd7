"""Decoded frames -> per-clip backbone features, with the fingerprint that names them.

The one place that applies a model's recorded preprocessing and clip protocol to its backbone: the
scorer, the training feature cache and ``aqa bank build`` all extract features through it. The backbone
runs in one of the runtimes of :mod:`models.backbone_runtime`: eager torch (the fused inference form of
:class:`~models.i3d.I3D`), the AOTInductor-compiled graph, or the ONNX export in ONNX Runtime; all give
the same features and the same fingerprint. ``runtime="auto"`` takes the one measured fastest here.
Loading one also keeps large freed blocks in the heap for reuse (:mod:`models.allocator`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from models.allocator import keep_freed_memory
from models.backbone_runtime import (
    RUNTIME_SETTINGS,
    Backbone,
    Runtime,
    RuntimeSetting,
    choose_runtime,
    load_backbone,
)
from models.clips import ClipProtocol
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, BackboneConfig, ModelConfig, ModelDirError, feature_fingerprint
from models.onnx_backbone import OnnxBackbone
from video.decode import DecodedVideo
from video.preprocessing import Preprocessing


class FeatureExtractor:
    """A backbone with its preprocessing and clip protocol.

    ``backbone`` is the source of the weights: an :class:`I3D` (put in eval mode; its state dict names the
    features) or, for callers that hold only an export, an :class:`OnnxBackbone` with the ``weights`` it was
    exported from. ``engine`` is what runs, in ``runtime``; by default the I3D's fused inference form in
    eager torch, or the ONNX backbone itself. Non-torch engines take their input on the CPU.
    """

    def __init__(self, backbone: I3D | OnnxBackbone, config: BackboneConfig, preprocessing: Preprocessing,
                 clips: ClipProtocol, device: torch.device | str = "cpu", clip_batch_size: int | None = None,
                 weights: dict[str, torch.Tensor] | None = None, engine: Backbone | None = None,
                 runtime: Runtime | None = None) -> None:
        keep_freed_memory()
        if isinstance(backbone, I3D):
            if weights is not None:
                raise ValueError("weights are only given with an ONNX backbone; an I3D's are its state dict")
            self.backbone: I3D | OnnxBackbone = backbone.eval().to(device)
            weights = backbone.state_dict()
            self.engine: Backbone = engine if engine is not None else self.backbone.fused()
            self.runtime: Runtime = runtime or "torch"
        else:
            if weights is None:
                raise ValueError("an ONNX backbone needs the weights it was exported from, for the fingerprint")
            self.backbone, self.engine, self.runtime = backbone, backbone, "onnx"
        self.device = torch.device(device) if self.runtime == "torch" else torch.device("cpu")
        self.config = config
        self.preprocessing = preprocessing
        self.clips = clips
        self.clip_batch_size = clip_batch_size
        self._eager_engine: Backbone | None = self.engine if self.runtime == "torch" else None
        self.fingerprint = feature_fingerprint(weights, config, preprocessing, clips)

    @classmethod
    def from_model_dir(cls, model_dir: Path, device: str = "cpu", config: ModelConfig | None = None,
                       runtime: RuntimeSetting = "torch", onnx_threads: int = 0) -> FeatureExtractor:
        """Load the backbone in ``runtime``: "torch"; "compiled" or "onnx" (their files must be built and made
        from the current ``backbone.safetensors``: ``aqa runtime``, ``aqa export onnx``); or "auto", the
        runtime ``runtime.json`` records as fastest on this machine, timing the built ones first when the
        record is missing or out of date. ``onnx_threads``: ONNX Runtime's intra-op threads (0: its default)."""
        keep_freed_memory()  # before the runtimes are timed
        model_dir = Path(model_dir)
        config = config or ModelConfig.load(model_dir)
        if runtime not in RUNTIME_SETTINGS:
            raise ValueError(f"runtime must be one of {RUNTIME_SETTINGS}, got {runtime!r}")
        weights = model_dir / BACKBONE_WEIGHTS
        if not weights.is_file():
            raise ModelDirError(f"{model_dir} is missing {BACKBONE_WEIGHTS}")
        backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
        backbone.load_state_dict(load_file(str(weights)), strict=True)
        backbone.eval().to(device)
        if runtime == "auto":
            choice = choose_runtime(model_dir, config, backbone, device, onnx_threads)
            engine, chosen = choice.backbone, choice.runtime
        else:
            engine, chosen = load_backbone(runtime, model_dir, config, backbone, device, onnx_threads), runtime
        return cls(backbone, config.backbone, config.preprocessing_obj, config.clip_protocol, device, engine=engine,
                   runtime=chosen)

    def __call__(self, decoded: DecodedVideo) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> per-clip features (num_clips, D) on the CPU."""
        return self.from_frames(decoded.frames[None])[0]

    @property
    def can_share_cores(self) -> bool:
        """Whether :meth:`from_frames` can run on fewer threads while other work holds cores: an I3D on the CPU,
        whose eager form follows torch's thread count."""
        return isinstance(self.backbone, I3D) and self.device.type == "cpu"

    @torch.inference_mode()
    def from_frames(self, frames: np.ndarray, sharing_cores: bool = False) -> torch.Tensor:
        """Decoded uint8 frames of B videos (B, T, H, W, 3) -> per-clip features (B, num_clips, D) on the CPU.

        All B videos' clips go through the backbone together (``clip_batch_size`` at a time, if set).
        ``sharing_cores`` (with :attr:`can_share_cores`): other work of this process holds cores, and the caller
        has cut torch's threads for it; run the eager form, which follows that count, whatever the runtime.
        An AOTInductor package keeps the OpenMP thread count it was built with and an ONNX Runtime session
        its own pool, so they would compete with that work for the cores (docs/fast-path.md: 50 dives
        pipelined in 1.39 s with the eager form on one thread, 1.78-1.97 s with the AOTInductor package,
        which alone is 1.4 x faster)."""
        video = self.preprocessing.normalize(frames).to(self.device)
        kinetics_range = self.preprocessing.normalization == "kinetics"
        engine = self._eager() if sharing_cores and self.can_share_cores else self.engine
        features = engine.extract_clip_features(video, self.clips, batch_size=self.clip_batch_size,
                                                check_range=kinetics_range)
        return features.cpu()

    def _eager(self) -> Backbone:
        """The I3D's fused eager form: the serving engine under the torch runtime, else built on first use."""
        if self._eager_engine is None:
            assert isinstance(self.backbone, I3D)
            self._eager_engine = self.backbone.fused()
        return self._eager_engine
