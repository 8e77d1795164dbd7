"""The reference state-dict layout of the piergiaj I3D port (``rgb_imagenet.pt``), built from a table.

Written independently of ``models/i3d.py`` (it does not import it): the channel counts are those of
Inception-v1 (Szegedy et al. 2015, Table 1) as inflated by Carreira & Zisserman (2017, Fig. 3) and
named as in piergiaj/pytorch-i3d. Max-pools have no tensors, so they do not appear.
"""

from __future__ import annotations

# name -> (in_channels, out_channels, kernel) for the stem convolutions.
STEM = {
    "Conv3d_1a_7x7": (3, 64, (7, 7, 7)),
    "Conv3d_2b_1x1": (64, 64, (1, 1, 1)),
    "Conv3d_2c_3x3": (64, 192, (3, 3, 3)),
}

# name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce (a 3x3x3 in I3D), #5x5, pool proj).
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

NUM_CLASSES = 400
REFERENCE_NUM_TENSORS = 287
REFERENCE_NUM_PARAMETERS = 12_697_264


def _unit(prefix: str, cin: int, cout: int, kernel: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.conv3d.weight": (cout, cin, *kernel),
        f"{prefix}.bn.weight": (cout,),
        f"{prefix}.bn.bias": (cout,),
        f"{prefix}.bn.running_mean": (cout,),
        f"{prefix}.bn.running_var": (cout,),
    }


def reference_layout() -> dict[str, tuple[int, ...]]:
    """Ordered key -> shape of the 287 tensors of the reference checkpoint."""
    layout: dict[str, tuple[int, ...]] = {}
    for name, (cin, cout, kernel) in STEM.items():
        layout.update(_unit(name, cin, cout, kernel))
    channels = STEM["Conv3d_2c_3x3"][1]
    one, three_reduce, three, five_reduce, five, pool_proj = 0, 1, 2, 3, 4, 5
    for name, c in MIXED.items():
        layout.update(_unit(f"{name}.b0", channels, c[one], (1, 1, 1)))
        layout.update(_unit(f"{name}.b1a", channels, c[three_reduce], (1, 1, 1)))
        layout.update(_unit(f"{name}.b1b", c[three_reduce], c[three], (3, 3, 3)))
        layout.update(_unit(f"{name}.b2a", channels, c[five_reduce], (1, 1, 1)))
        layout.update(_unit(f"{name}.b2b", c[five_reduce], c[five], (3, 3, 3)))
        layout.update(_unit(f"{name}.b3b", channels, c[pool_proj], (1, 1, 1)))
        channels = c[one] + c[three] + c[five] + c[pool_proj]
    layout["logits.conv3d.weight"] = (NUM_CLASSES, channels, 1, 1, 1)
    layout["logits.conv3d.bias"] = (NUM_CLASSES,)
    return layout


def is_parameter(key: str) -> bool:
    """Running statistics are buffers; everything else in the layout is a trainable parameter."""
    return not key.endswith(("running_mean", "running_var"))
