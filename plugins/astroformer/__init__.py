"""Astroformer galaxy-morphology plugin: the ten Galaxy10 DECaLS classes for every galaxy
in a survey field (task ``detect-classify``).

Light on purpose: importing this package must not import torch. The torch model lives in
``model.py`` (timm's MaxxViT/CoAtNet blocks), numpy pre/post-processing in
``processing.py``, the training recipe of the shipped demo weights in ``train.py``; the
field pipeline is ``tessera.pipelines.runners.detect_classify``.
"""
