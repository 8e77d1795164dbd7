"""Which frames of the sampled video go into each backbone clip.

CoRe (Yu et al., ICCV 2021) reads 103 frames as 10 overlapping clips of 16 frames starting at
0, 10, ..., 80 and 86, and averages the clip features; TPT (Bai et al., ECCV 2022) reads 20 clips of
8 frames with stride 5 and keeps one feature per clip. With ``mirror`` each clip's feature is the mean
of the clip's and of its left-right mirror image's (test-time augmentation: a dive filmed from the
other side scores the same; the fine-tuning flips clips at random, so both views are familiar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ClipProtocol:
    """Clip length and the start frame of every clip, over a video of ``num_frames`` frames; ``mirror``
    averages every clip's feature with its mirror image's (twice the backbone work)."""

    length: int
    starts: tuple[int, ...]
    mirror: bool = False

    def __post_init__(self) -> None:
        if self.length < 1 or not self.starts or min(self.starts) < 0:
            raise ValueError(f"invalid clip protocol: length={self.length}, starts={self.starts}")

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    @property
    def frames_needed(self) -> int:
        return max(self.starts) + self.length

    @classmethod
    def strided(cls, num_frames: int, length: int, stride: int, mirror: bool = False) -> ClipProtocol:
        """Clips every ``stride`` frames; a last clip is added to end on the final frame if needed."""
        if num_frames < length:
            raise ValueError(f"{num_frames} frames cannot hold a clip of {length}")
        starts = list(range(0, num_frames - length + 1, stride))
        if starts[-1] != num_frames - length:
            starts.append(num_frames - length)
        return cls(length=length, starts=tuple(starts), mirror=mirror)

    @classmethod
    def core_mtl(cls) -> ClipProtocol:
        """CoRe's reference protocol over 103 frames (the last start is 86, as in its code)."""
        return cls(length=16, starts=(0, 10, 20, 30, 40, 50, 60, 70, 80, 86))

    @classmethod
    def tpt(cls) -> ClipProtocol:
        """TPT's reference protocol: 20 clips of 8 frames, stride 5, over 103 frames."""
        return cls.strided(103, 8, 5)

    def split(self, video: torch.Tensor) -> torch.Tensor:
        """(C, T, H, W) or (B, C, T, H, W) -> (num_clips * B, C, length, H, W), clip-major per video.

        For a batch the result is ordered video by video: rows ``b * num_clips + k``.
        """
        batched = video if video.dim() == 5 else video.unsqueeze(0)
        if batched.shape[2] < self.frames_needed:
            raise ValueError(f"clip protocol needs {self.frames_needed} frames, video has {batched.shape[2]}")
        clips = torch.stack([batched[:, :, s : s + self.length] for s in self.starts], dim=1)
        return clips.flatten(0, 1)

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], batched: torch.Tensor,
            batch_size: int | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, num_clips, D): ``forward`` ((N, C, length, H, W) -> (N, D)) on every clip.

        Rows are cut video by video (``b * num_clips + k``, as :meth:`split`) and passed ``batch_size``
        at a time (all at once if None), so at most ``batch_size`` clips are in memory (twice that with
        ``mirror``: each batch runs together with its mirror images).
        """
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if batched.shape[2] < self.frames_needed:
            raise ValueError(f"clip protocol needs {self.frames_needed} frames, video has {batched.shape[2]}")
        windows = [(b, start) for b in range(batched.shape[0]) for start in self.starts]
        step = batch_size or len(windows)
        features = []
        for first in range(0, len(windows), step):
            chunk = torch.stack([batched[b, :, s : s + self.length] for b, s in windows[first : first + step]])
            if self.mirror:
                both = forward(torch.cat([chunk, chunk.flip(-1)]))
                features.append((both[: len(chunk)] + both[len(chunk) :]) / 2)
            else:
                features.append(forward(chunk))
        return torch.cat(features).view(batched.shape[0], self.num_clips, -1)

    def to_dict(self) -> dict[str, Any]:
        """JSON fields; ``mirror`` only when set, so protocols without it keep their recorded form."""
        data: dict[str, Any] = {"length": self.length, "starts": list(self.starts)}
        if self.mirror:
            data["mirror"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipProtocol:
        return cls(length=int(data["length"]), starts=tuple(int(s) for s in data["starts"]),
                   mirror=bool(data.get("mirror", False)))
