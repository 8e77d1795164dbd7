"""The ``aqa weights import`` command body (argument parsing lives in ``aqa/cli.py``).

The CoRe checkpoint command needs the MTL-AQA loader to compute group boundaries, so it lives in
``training/core_import.py`` (``models`` never imports ``training``).
"""

from __future__ import annotations

import json
from pathlib import Path

from models.weights.i3d_import import BACKBONE_RECORD, import_i3d


def run_weights_import(file: Path, layout: str, out: Path) -> str:
    """Convert an I3D checkpoint in ``layout`` to ``out/backbone.safetensors``; returns a summary.

    Raises :class:`models.weights.WeightImportError` (a ValueError) with the reason if it cannot.
    """
    weights = import_i3d(file, layout, out)  # type: ignore[arg-type]  # checked inside
    record = json.loads((Path(out) / BACKBONE_RECORD).read_text())
    source, batchnorm, padding = record["source"], record["batchnorm"], record["padding"]
    lines = [
        f"wrote {weights}: I3D, {record['num_tensors']} tensors, {record['num_parameters']:,} parameters",
        f"  from {source['file']} ({source['layout']} layout, sha256 {source['sha256'][:16]}...)",
    ]
    if batchnorm["folded_into_scale"]:
        lines.append(f"  BatchNorm eps {batchnorm['source_eps']:g} of the source folded into the scales")
    if padding["equals_tf_same_when"] != "always":
        lines.append(
            f"  padding equals ours when {padding['equals_tf_same_when']}; otherwise {padding['otherwise']}"
        )
    lines.append(f"  input: {record['input']['note']}")
    lines.append(f"  details: {Path(out) / BACKBONE_RECORD}")
    return "\n".join(lines)
