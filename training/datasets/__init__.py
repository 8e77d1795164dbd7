"""Labelled dive datasets in the layouts the field uses, read into :class:`DiveRecord` lists."""

from training.datasets.records import DiveRecord, Split

__all__ = ["DiveRecord", "Split"]
