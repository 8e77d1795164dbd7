"""CoRe's group boundaries from MTL-AQA training annotations, and the CoRe checkpoint import command.

CoRe's test script does not store its tree's groups; it rebuilds them from the training split
(``tools/builder.py`` ``build_group`` with ``datasets/MTLPair.py`` ``delta``): for every pair i < j of
training dives with the same difficulty degree, ``|final_i / difficulty_i - final_j / difficulty_j|``,
then ``Group_helper(deltas, RT_depth=5, Symmetrical=True, Max=30, Min=0)``: quantiles of the sorted
deltas, 8 groups on each side of 0, the outermost bound 30. That is
``GroupBoundaries.from_deltas(deltas, 16, symmetric=True, score_range=30)``.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.gart import GroupBoundaries
from models.weights.core_import import CORE_CHECKPOINT_RECORD, CORE_LABEL_SCALE, import_core_checkpoint
from training.datasets.mtl_aqa import load_mtl_aqa
from training.datasets.records import DatasetError, DiveRecord

CORE_NUM_GROUPS = 16  # reference RT_depth 5: 2 ** (5 - 1) leaves


def core_training_deltas(train: Sequence[DiveRecord]) -> np.ndarray:
    """|execution_i - execution_j| over the pairs i < j of training dives with equal difficulty."""
    by_difficulty: dict[float, list[float]] = defaultdict(list)
    for record in train:
        if record.execution_score is None:
            raise DatasetError(f"dive {record.key} has no difficulty; CoRe's groups need every dive's")
        by_difficulty[record.difficulty].append(record.execution_score)
    deltas = [abs(a - b) for scores in by_difficulty.values() for a, b in itertools.combinations(scores, 2)]
    if not deltas:
        raise DatasetError("no two training dives share a difficulty: CoRe's groups cannot be built")
    return np.array(deltas, dtype=np.float64)


def core_group_boundaries(
    train: Sequence[DiveRecord], num_groups: int = CORE_NUM_GROUPS, score_range: float = CORE_LABEL_SCALE
) -> GroupBoundaries:
    """CoRe's symmetric group boundaries from the training dives (see the module docstring)."""
    return GroupBoundaries.from_deltas(
        core_training_deltas(train), num_groups, symmetric=True, score_range=score_range
    )


def run_core_import(file: Path, out: Path, mtl_aqa_info: Path) -> str:
    """Import an official CoRe checkpoint into the model directory ``out``; returns a summary.

    ``mtl_aqa_info`` is MTL-AQA's annotation folder (annotation pickle, ``train_split_0.pkl``, ...);
    its training split gives the group boundaries. Raises ``WeightImportError`` or ``DatasetError``.
    """
    train = load_mtl_aqa(mtl_aqa_info).train
    deltas = core_training_deltas(train)
    groups = GroupBoundaries.from_deltas(
        deltas, CORE_NUM_GROUPS, symmetric=True, score_range=CORE_LABEL_SCALE
    )
    import_core_checkpoint(file, out, groups)
    record = json.loads((Path(out) / CORE_CHECKPOINT_RECORD).read_text())
    scalars = ", ".join(f"{k} {v:.4g}" for k, v in record["checkpoint"].items() if v is not None)
    positive = ", ".join(f"{high:.3g}" for _, high in groups.groups[CORE_NUM_GROUPS // 2 :])
    lines = [
        f"imported CoRe checkpoint {Path(file).name} ({scalars or 'no training record'}) into {out}",
        "  backbone.safetensors: I3D, hassony2 layout converted, CoRe's BatchNorm eps 1e-5 folded in",
        "  head.safetensors: CoRe regression tree, hidden 256, 16 leaves, raw leaf outputs",
        (
            "  config.json: execution labels / 30 x difficulty; CoRe's input (the 103 frames ending at the dive's"
            " end, stretched to 256 x 455, 224 centre crop, ImageNet normalisation); 10 clips of 16 frames;"
            " 10 random same-difficulty exemplars"
        ),
        (
            f"  groups: {CORE_NUM_GROUPS} from {len(deltas):,} same-difficulty pairs of {len(train)} training"
            f" dives; upper bounds of the positive side: {positive}"
        ),
        f"  what still differs from CoRe's input (decoding, resampling filter): {Path(out) / CORE_CHECKPOINT_RECORD}",
        f"reproduce CoRe's test: aqa eval --protocol core-mtl --data <MTL-AQA root> --model {out}",
        f"score your own videos: build the exemplar bank first: aqa bank build <dataset> --model {out}",
    ]
    return "\n".join(lines)
