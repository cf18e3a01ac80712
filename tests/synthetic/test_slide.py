"""``synth_slide`` / ``tessera synth slide``: an Aperio SVS OpenSlide reads, whose pixels are
the renderer's, with a ground-truth mask that agrees with the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tessera.app.cli.main import main
from tessera.pipelines.synthetic.histology import LABEL_BENIGN, LABEL_GLASS, LABEL_TUMOUR
from tessera.pipelines.synthetic.slide import SlideTruth, mask_downsample, synth_slide

openslide = pytest.importorskip("openslide", reason="could not import openslide")

SIZE = 2048


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SlideTruth:
    out = tmp_path_factory.mktemp("slide") / "syn.svs"
    return synth_slide(out, size_px=SIZE, seed=3, malignant="ductal_carcinoma")


def test_files_and_aperio_metadata(slide: SlideTruth) -> None:
    assert slide.slide_path.is_file() and slide.mask_path.is_file() and slide.info_path.is_file()
    assert slide.mask_path.name == "syn.truth.png" and slide.info_path.name == "syn.truth.json"
    with openslide.OpenSlide(str(slide.slide_path)) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(osr.properties["openslide.objective-power"]) == pytest.approx(40)
        assert osr.level_count >= 3
        assert osr.level_dimensions[0] == (SIZE, SIZE)
        assert osr.level_dimensions[1] == (SIZE // 4, SIZE // 4)
    import tifffile

    with tifffile.TiffFile(slide.slide_path) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
        assert tf.pages[0].is_tiled


def test_level0_pixels_are_the_scene_render(slide: SlideTruth) -> None:
    scene = slide.scene()
    with openslide.OpenSlide(str(slide.slide_path)) as osr:
        for y0, x0 in [(700, 600), (1024, 1280), (300, 1500)]:
            got = np.asarray(osr.read_region((x0, y0), 0, (256, 256)).convert("RGB"), np.int16)
            want = scene.render(y0, x0, 256, 256, mpp=slide.mpp).astype(np.int16)
            diff = np.abs(got - want)
            assert diff.mean() < 3.0 and np.percentile(diff, 99) < 25  # JPEG q90, 4:2:0


def test_truth_json_and_mask(slide: SlideTruth) -> None:
    info = json.loads(slide.info_path.read_text())
    mask = slide.load_mask()
    ds = info["truth"]["downsample"]
    assert ds == mask_downsample((SIZE, SIZE)) == slide.mask_downsample
    assert mask.shape == (SIZE // ds, SIZE // ds) == tuple(info["truth"]["shape_yx"])
    assert set(np.unique(mask)) == {LABEL_GLASS, LABEL_BENIGN, LABEL_TUMOUR}
    assert info["truth"]["mpp"] == pytest.approx(ds * 0.25)
    px_mm2 = (ds * 0.25 / 1000) ** 2
    assert info["tumour_area_mm2"] == pytest.approx((mask == LABEL_TUMOUR).sum() * px_mm2, rel=1e-4)
    assert info["tissue_area_mm2"] == pytest.approx((mask > 0).sum() * px_mm2, rel=1e-4)
    assert 0.18 < info["tumour_fraction_of_tissue"] < 0.42  # asked for 0.3
    areas = [r["area_mm2"] for r in info["tumour_regions"]]
    assert areas == sorted(areas, reverse=True) and sum(areas) <= info["tumour_area_mm2"] + 1e-9
    assert info["architectures"]["malignant"]["name"] == "ductal_carcinoma"
    assert info["stain"]["h_od"] and SlideTruth.load(slide.info_path) == slide


def test_mask_agrees_with_the_pixels(slide: SlideTruth) -> None:
    """Read level 1 (1 µm/px) and compare image statistics inside each truth label."""
    from scipy import ndimage as ndi

    mask = slide.load_mask()
    with openslide.OpenSlide(str(slide.slide_path)) as osr:
        lvl = np.asarray(osr.read_region((0, 0), 1, osr.level_dimensions[1]).convert("RGB"))
    f = slide.mask_downsample // 4  # level-1 pixels per mask pixel
    up = np.kron(mask, np.ones((f, f), np.uint8))[: lvl.shape[0], : lvl.shape[1]]
    ch, _ = slide.stain.concentrations(lvl)
    inner = {v: ndi.binary_erosion(up == v, iterations=8) for v in (0, 1, 2)}
    assert lvl[inner[LABEL_GLASS]].mean() > 225
    dense = ch > 0.38
    assert dense[inner[LABEL_TUMOUR]].mean() > 3 * dense[inner[LABEL_BENIGN]].mean()


def test_same_seed_same_slide(slide: SlideTruth, tmp_path: Path) -> None:
    again = synth_slide(tmp_path / "again.svs", size_px=SIZE, seed=3, malignant="ductal_carcinoma")
    with openslide.OpenSlide(str(slide.slide_path)) as a, openslide.OpenSlide(
        str(again.slide_path)
    ) as b:
        ra = np.asarray(a.read_region((512, 512), 0, (300, 300)))
        rb = np.asarray(b.read_region((512, 512), 0, (300, 300)))
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(slide.load_mask(), again.load_mask())


def test_cli_writes_slide_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.svs"
    rc = main(["synth", "slide", "--out", str(out), "--size", "1024,1536", "--seed", "5",
               "--malignant", "lobular_carcinoma", "--mpp", "0.5", "--app-mag", "20"])
    assert rc == 0
    assert out.is_file() and (tmp_path / "cli.truth.png").is_file()
    info = json.loads((tmp_path / "cli.truth.json").read_text())
    assert info["size_yx_px"] == [1024, 1536] and info["mpp"] == 0.5 and info["app_mag"] == 20
    assert info["architectures"]["malignant"]["name"] == "lobular_carcinoma"
    with openslide.OpenSlide(str(out)) as osr:
        assert osr.dimensions == (1536, 1024)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert "tumour" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--size", "100"], ["--size", "a,b"],
                                  ["--malignant", "adenoma"], ["--tumour-fraction", "1.5"]])
def test_cli_rejects_bad_options(tmp_path: Path, args: list[str]) -> None:
    assert main(["synth", "slide", "--out", str(tmp_path / "x.svs"), *args]) == 2
    assert not (tmp_path / "x.svs").exists()
