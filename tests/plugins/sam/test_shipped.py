"""The shipped demo weights, through the path users take (ONNX Runtime, no torch):
held-out IoU, `tessera sam` on a photo, a pyramidal slide and a CT volume, and
`tessera run sam` with a prompts file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.app.cli.main import main
from tessera.pipelines.prompting.cache import EmbeddingCache
from tessera.pipelines.prompting.session import PromptSession
from tessera.pipelines.synthetic.objects import centre_point, make_scenes, mask_box, render_scene

HELD_OUT_SEED = 10_000  # train.py: held-out scenes are make_scenes(seed + 10_000, ...)


def iou(a, b) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


@pytest.fixture(scope="module")
def session():
    return PromptSession.from_plugin("sam", cache=EmbeddingCache())


@pytest.fixture(scope="module")
def held_out():
    # the model card's held-out set: 150 scenes, 414 objects of >= 100 px (~15 s to render)
    return make_scenes(HELD_OUT_SEED, 150)


def _held_out_ious(session, scenes, kind):
    out = []
    for scene in scenes:
        session.set_image(scene.image)
        for i in range(1, scene.n_objects + 1):
            m = scene.mask(i)
            if m.sum() < 100:
                continue
            if kind == "box":
                r = session.predict(box_l0_xyxy=mask_box(m))
            else:
                r = session.predict(points_l0_xy=[centre_point(m)], labels=[1])
            out.append(iou(r.mask.paste(session.region), m))
    return np.array(out)


@pytest.fixture(scope="module")
def box_ious(session, held_out):
    return _held_out_ious(session, held_out, "box")


@pytest.fixture(scope="module")
def point_ious(session, held_out):
    return _held_out_ious(session, held_out, "point")


# The targets: box >= 0.85, one positive point >= 0.75, on held-out scenes. The
# shipped weights measure (MODEL_CARD.md, weights/metrics.json, this exact set): tiny SAM
# box 0.874, one click 0.831; SAM-UNet box 0.887.
BOX_TARGET, POINT_TARGET = 0.85, 0.75


@pytest.mark.accuracy
def test_held_out_iou_with_one_positive_point_reaches_the_target(point_ious):
    assert len(point_ious) >= 400
    assert point_ious.mean() >= POINT_TARGET, point_ious.mean()


@pytest.mark.accuracy
def test_sam_unet_variant_with_a_box_reaches_the_target(held_out):
    s = PromptSession.from_plugin("sam", variant="demo-unet", cache=EmbeddingCache())
    ious = _held_out_ious(s, held_out, "box")
    assert ious.mean() >= BOX_TARGET, ious.mean()
    with pytest.raises(ValueError, match="box prompts only"):
        s.predict(points_l0_xy=[[10, 10]], labels=[1])


@pytest.mark.accuracy
def test_held_out_iou_with_a_box_reaches_the_target(box_ious):
    assert len(box_ious) >= 400
    assert box_ious.mean() >= BOX_TARGET, box_ious.mean()


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    from PIL import Image

    scene = render_scene(np.random.default_rng(123), size_yx=(240, 320), style="he")
    path = tmp_path_factory.mktemp("sam_cli") / "scene.png"
    Image.fromarray(scene.image).save(path)
    return path, scene


def _biggest(scene) -> np.ndarray:
    sizes = [scene.mask(i).sum() for i in range(1, scene.n_objects + 1)]
    return scene.mask(1 + int(np.argmax(sizes)))


def test_cli_box_to_png_and_point_to_geojson(scene_png, tmp_path, capsys, monkeypatch):
    from matplotlib.path import Path as MplPath

    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    path, scene = scene_png
    truth = _biggest(scene)
    x0, y0, x1, y1 = mask_box(truth)
    out = tmp_path / "mask.png"
    assert main(["sam", str(path), "--box", f"{x0},{y0},{x1},{y1}", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    from PIL import Image

    mask = np.asarray(Image.open(out)) > 0
    assert mask.shape == truth.shape
    assert iou(mask, truth) > 0.8
    side = json.loads(out.with_name("mask.png.json").read_text())
    assert side["l0_origin_xy"] == [0.0, 0.0] and side["size_px_hw"] == list(truth.shape)
    assert summary["encode_s"] > 0
    # a second prompt on the same file uses the disk cache: no encoder run
    cx, cy = centre_point(truth)
    gj = tmp_path / "obj.geojson"
    assert main(["sam", str(path), "--point", f"{cx},{cy},1", "--out", str(gj), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["encode_s"] == 0
    feats = json.loads(gj.read_text())["features"]
    ring = np.array(feats[0]["geometry"]["coordinates"][0])
    yy, xx = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]]
    inside = MplPath(ring).contains_points(np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)).reshape(truth.shape)
    assert iou(inside, truth) > 0.7
    assert feats[0]["properties"]["objectType"] == "annotation"


def test_cli_on_a_pyramid_at_level_1(tmp_path, capsys, monkeypatch):
    """Level-1 segmentation of a two-level TIFF; GeoJSON comes back in level-0 pixels."""
    from matplotlib.path import Path as MplPath

    from tessera.pipelines.writers.tiff_pyramid import write_pyramid_tiff

    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    scene = render_scene(np.random.default_rng(5), size_yx=(512, 512), style="he")
    path = tmp_path / "slide.tif"
    write_pyramid_tiff(path, l0_shape_yx=(512, 512), render_region=lambda y, x, h, w: scene.image[y : y + h, x : x + w],
                       tile_size_px=128, n_levels=2, level_downsample=2, compression="deflate", flavour="tiff")
    truth = _biggest(scene)
    x0, y0, x1, y1 = mask_box(truth)
    gj = tmp_path / "lvl1.geojson"
    code = main(["sam", str(path), "--level", "1", "--box", f"{x0},{y0},{x1},{y1}", "--out", str(gj), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    bx0, by0, bx1, by1 = summary["bbox_l0_xyxy"]
    # level 0; a mapping error (level-1 px taken as level-0, a lost origin) is off by ~100s of px,
    # the demo weights' boundary error is a few level-1 px (up to 6 on this object)
    assert max(abs(bx0 - x0), abs(by0 - y0), abs(bx1 - x1), abs(by1 - y1)) <= 16
    ring = np.array(json.loads(gj.read_text())["features"][0]["geometry"]["coordinates"][0])
    assert np.all(ring % 2 == 0)  # level-1 pixel edges land on even level-0 coordinates
    yy, xx = np.mgrid[0:512, 0:512]
    inside = MplPath(ring).contains_points(np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)).reshape(512, 512)
    assert iou(inside, truth) > 0.7


def test_cli_on_a_ct_slice(tmp_path, capsys, monkeypatch):
    nib = pytest.importorskip("nibabel")
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    scene = render_scene(np.random.default_rng(9), size_yx=(128, 128), style="ct")
    hu = scene.image[..., 0].astype(np.float32) * 8 - 1000  # grey 0..255 -> HU
    vol = np.stack([hu - 500, hu, hu + 0.0])  # slice 1 is the scene
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), np.eye(4)), path)  # x, y, z on disk
    import tessera

    with tessera.open(path) as src:
        assert src.axes == "ZYX"
        plane = np.asarray(src.levels[0][1])
    truth = scene.mask(1)
    if plane.shape != truth.shape or not np.allclose(plane, hu):
        pytest.skip("the NIfTI reader reorients this test volume; covered by the array test")
    cx, cy = centre_point(truth)
    out = tmp_path / "ct.npy"
    assert main(["sam", str(path), "--slice", "1", "--window", "-1000,1048", "--point", f"{cx},{cy}",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["slice"] == 1
    mask = np.load(out)
    assert mask.shape == truth.shape and iou(mask, truth) > 0.6


def test_cli_usage_errors_exit_2(scene_png, tmp_path):
    path, _ = scene_png
    assert main(["sam", str(path), "--point", "1,2,3", "--out", str(tmp_path / "m.png")]) == 2
    assert main(["sam", str(path), "--point", "1,2", "--out", str(tmp_path / "m.bmp")]) == 2
    assert main(["sam", str(path), "--out", str(tmp_path / "m.png")]) == 2  # no prompt
    assert main(["sam", str(path), "--box", "5,5,1,1", "--out", str(tmp_path / "m.png")]) == 2


def test_run_with_a_prompts_file(scene_png, tmp_path):
    path, scene = scene_png
    truth = _biggest(scene)
    x0, y0, x1, y1 = (float(v) for v in mask_box(truth))
    cx, cy = (float(v) for v in centre_point(truth))
    folder = tmp_path / "in"
    folder.mkdir()
    img = folder / "scene.png"
    img.write_bytes(path.read_bytes())
    (folder / "scene.png.prompts.json").write_text(json.dumps(
        [{"name": "big", "box": [x0, y0, x1, y1]}, {"name": "click", "points": [[cx, cy, 1]]}]
    ))
    out = tmp_path / "out"
    assert main(["run", "sam", str(img), "--out", str(out)]) == 0
    res = out / "scene"
    summary = json.loads((res / "summary.json").read_text())
    assert [o["name"] for o in summary["objects"]] == ["big", "click"]
    from PIL import Image

    labels = np.asarray(Image.open(res / "labels.png"))
    assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1, 2}
    assert iou(labels > 0, truth) > 0.8
    feats = json.loads((res / "annotations.geojson").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in feats} >= {"big", "click"}
    # no prompts: a clear per-input failure, exit 1
    other = folder / "other.png"
    other.write_bytes(path.read_bytes())
    assert main(["run", "sam", str(other), "--out", str(tmp_path / "out2")]) == 1
