"""Bring-your-own weights: published I3D checkpoints and official CoRe checkpoints into our formats.

``i3d_import``: piergiaj / hassony2 I3D state dicts -> ``backbone.safetensors``.
``core_import``: an official CoRe checkpoint -> a model directory (without exemplar bank).
Files are only ever read with ``torch.load(..., weights_only=True)``.
"""

from models.weights.core_import import import_core_checkpoint
from models.weights.i3d_import import LAYOUTS, WeightImportError, convert_i3d_state_dict, import_i3d

__all__ = ["LAYOUTS", "WeightImportError", "convert_i3d_state_dict", "import_core_checkpoint", "import_i3d"]
