"""segment-3d: the test plugin (intensity bands) on a synthetic volume with known labels,
from a NIfTI file to NIfTI/OME-Zarr labels on the input grid with the input's affine."""

from __future__ import annotations

import json
import threading

import nibabel as nib
import numpy as np
import pytest

import tessera
from tessera.pipelines.plugin_system import get_plugin
from tessera.pipelines.progress import Cancelled, RecordingProgress
from tessera.pipelines.runners.base import ModelInfo, PluginPredictor, RunOptions
from tessera.pipelines.runners.registry import runner_for
from tessera.pipelines.runners.segment_3d import segment_volume

AFFINE_XYZ = np.array([[-1.0, 0, 0, 90.0], [0, -1.0, 0, 120.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def volume(synth):
    return synth.make_volume((40, 56, 72), spacing_mm=(2.0, 1.0, 1.0), seed=2)


@pytest.fixture(scope="module")
def segmented(volume, plugin_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg3d")
    nib.save(nib.Nifti1Image(volume.hu.transpose(2, 1, 0), AFFINE_XYZ), root / "ct.nii.gz")
    nib.save(nib.Nifti1Image(volume.labels.transpose(2, 1, 0), AFFINE_XYZ), root / "truth.nii.gz")
    plugin = get_plugin(plugin_dirs["segment-3d"])
    summary = runner_for("segment-3d")(root / "ct.nii.gz", plugin, root / "out",
                                       options=RunOptions(truth=root / "truth.nii.gz"),
                                       progress=RecordingProgress(), cancel=threading.Event())
    return summary, root / "out"


def test_labels_on_the_input_grid_with_the_input_affine(volume, segmented):
    summary, out = segmented
    img = nib.load(out / "labels.nii.gz")
    assert np.allclose(img.affine, AFFINE_XYZ)
    assert img.get_data_dtype() == np.uint8
    labels = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert labels.shape == volume.labels.shape
    # The model runs at 2 mm isotropic (y, x halved) and resamples back.
    assert summary["model_grid_zyx"] == [40, 28, 36]
    for k in (1, 2):
        assert _dice(labels == k, volume.labels == k) > 0.8
    for k, name in ((1, "soft"), (2, "dense")):  # voxels of 2 x 1 x 1 mm on the input grid
        assert summary["labels"][name]["volume_ml"] == pytest.approx((labels == k).sum() * 2.0 / 1000)
    assert summary["truth"]["classes"]["soft"]["dsc"] > 0.8


def test_ome_zarr_labels_reopen_with_mm_spacing(volume, segmented):
    _, out = segmented
    src = tessera.open(out / "labels.ome.zarr")
    assert src.axes == "ZYX" and src.spacing == pytest.approx((2.0, 1.0, 1.0)) and src.spacing_unit == "mm"
    ref = np.asarray(nib.load(out / "labels.nii.gz").dataobj).transpose(2, 1, 0)
    assert np.array_equal(np.asarray(src.levels[0].compute(scheduler="sync")), ref)
    attrs = json.loads((out / "labels.ome.zarr" / ".zattrs").read_text())
    assert [p["class"] for p in attrs["image-label"]["properties"]] == ["background", "soft", "dense"]
    assert (out / "preview.png").exists() and not (out / ".tessera-work").exists()


def _model(plugin_dirs, target=None):
    m = ModelInfo.from_manifest(get_plugin(plugin_dirs["segment-3d"]).manifest)
    return ModelInfo(**{**m.__dict__, "target_spacing_mm": target})


def test_sliding_window_agrees_with_whole_volume_model(volume, synth, plugin_dirs, tmp_path):
    """No resampling: labels equal the model run on the whole volume except where the
    3x3x3 context meets a window border (Gaussian blending keeps those rare)."""
    import onnxruntime as ort

    src = synth.volume_source(volume)
    predictor = PluginPredictor(str(plugin_dirs["segment-3d"]), "segment-3d")
    summary = segment_volume(src, lambda x: predictor(x[:, 0]), tmp_path, model=_model(plugin_dirs), options=RunOptions(),
                             progress=RecordingProgress(), cancel=None, identity={})
    assert summary["model_grid_zyx"] == [40, 56, 72]
    labels = np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj).transpose(2, 1, 0)
    sess = ort.InferenceSession(str(plugin_dirs["segment-3d"] / "model.onnx"), providers=["CPUExecutionProvider"])
    x = ((np.clip(volume.hu, -1000, 400) + 1000) / 1400).astype(np.float32)[None, None]
    whole = sess.run(None, {"input": x})[0][0].argmax(axis=0)
    inner = (slice(1, -1),) * 3
    assert (labels[inner] == whole[inner]).mean() > 0.995


def test_cancelled_volume_resumes_from_its_finished_planes(volume, synth, plugin_dirs, tmp_path):
    src = synth.volume_source(volume)
    predictor = PluginPredictor(str(plugin_dirs["segment-3d"]), "segment-3d")
    model = _model(plugin_dirs)
    cancel = threading.Event()
    calls = {"n": 0}

    def stopping(x):
        calls["n"] += 1
        if calls["n"] == 14:  # part-way through the third Z start
            cancel.set()
        return predictor(x[:, 0])

    with pytest.raises(Cancelled):
        segment_volume(src, stopping, tmp_path / "a", model=model, options=RunOptions(), progress=RecordingProgress(),
                       cancel=cancel, identity={})
    assert not (tmp_path / "a" / "summary.json").exists()
    marks = list((tmp_path / "a" / ".tessera-work" / "chunks").glob("*.npz"))
    assert marks
    resumed = segment_volume(src, lambda x: predictor(x[:, 0]), tmp_path / "a", model=model, options=RunOptions(),
                             progress=RecordingProgress(), cancel=None, identity={})
    assert resumed["resumed_planes"] > 0
    fresh = segment_volume(src, lambda x: predictor(x[:, 0]), tmp_path / "b", model=model, options=RunOptions(),
                           progress=RecordingProgress(), cancel=None, identity={})
    a = np.asarray(nib.load(tmp_path / "a" / "labels.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "b" / "labels.nii.gz").dataobj)
    assert np.array_equal(a, b)
    assert fresh["resumed_planes"] == 0


def test_predict_volume_hook_drives_multi_stage_plugins(volume, test_plugins, tmp_path):
    """A plugin whose processing module defines predict_volume is run through it; the
    runner still writes the NIfTI/OME-Zarr labels, volumes and summary."""
    folder = test_plugins.make_plugin(tmp_path / "hooked", "segment-3d", plugin_id="test-hooked-3d")
    (folder / "__init__.py").write_text("")
    (folder / "processing.py").write_text(
        "import numpy as np\n\n"
        "def predict_volume(source, plugin, options, progress, cancel):\n"
        "    hu = np.asarray(source.levels[0].compute(scheduler='sync'))\n"
        "    return {'labels': np.where(hu > 0, 2, np.where(hu > -600, 1, 0)).astype(np.uint8)}\n"
    )
    with open(folder / "manifest.toml", "a") as fh:
        fh.write('\n[hooks]\nprocessing = ".processing"\n')
    nib.save(nib.Nifti1Image(volume.hu.transpose(2, 1, 0), AFFINE_XYZ), tmp_path / "ct.nii.gz")
    summary = runner_for("segment-3d")(tmp_path / "ct.nii.gz", get_plugin(folder), tmp_path / "out",
                                       options=RunOptions(), progress=RecordingProgress(), cancel=threading.Event())
    labels = np.asarray(nib.load(tmp_path / "out" / "labels.nii.gz").dataobj).transpose(2, 1, 0)
    expected = np.where(volume.hu > 0, 2, np.where(volume.hu > -600, 1, 0))
    assert np.array_equal(labels, expected)
    assert summary["engine"] == "predict_volume hook"
    assert summary["labels"]["dense"]["volume_ml"] == pytest.approx((expected == 2).sum() * 2.0 / 1000)


def test_preview_centre_is_the_labelled_voxels_centre() -> None:
    """The preview's slices go through the labels' centre, computed plane by plane."""
    from tessera.pipelines.runners.segment_3d import _foreground_centre

    rng = np.random.default_rng(3)
    labels = np.zeros((20, 30, 25), np.uint8)
    labels[12:18, 3:9, 15:24] = rng.integers(1, 4, (6, 6, 9))
    expected = tuple(int(v) for v in np.argwhere(labels > 0).mean(axis=0))
    assert _foreground_centre(labels) == expected
    assert _foreground_centre(np.zeros((4, 6, 8), np.uint8)) == (2, 3, 4)
