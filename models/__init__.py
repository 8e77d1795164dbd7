"""Pure PyTorch parts: backbones, heads, losses, the scoring core, weight import/export.

Imports nothing from ``service``, ``workers`` or ``training``.
"""
