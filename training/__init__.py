"""The training subpackage: datasets, feature cache, trainers, metrics and reports.

It produces the deployed artefacts (weights, exemplar bank, model card). The serving path never
imports it.
"""
