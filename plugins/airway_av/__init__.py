"""Airway and artery-vein segmentation of chest CT (Qin et al., IEEE TMI 2021).

A two-stage ``segment-3d`` plugin: a tubule-sensitive 3D U-Net finds the airway tree,
a second one separates arteries from veins using the lung context and the distance to
the airway. ``manifest.toml`` describes it; ``model.py`` (torch) defines the networks,
``processing.py`` (numpy) the two-stage flow, ``train.py`` reproduces the demo weights.

This module stays light: listing plugins imports it, and must not import torch.
"""
