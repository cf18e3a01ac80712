"""SAM prompting plugin: click or box to segment (segment-anything, MobileSAM, MedSAM, SAM-UNet).

Light on purpose: importing this package must not import torch. The torch model lives in
``model.py`` (plus ``tiny_vit.py`` and ``sam_unet.py``), ONNX export in ``export.py``,
the numpy runtime in ``tessera.pipelines.prompting``.
"""
