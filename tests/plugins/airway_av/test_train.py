"""The training recipe: the artery-vs-vein loss term and training one role alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.plugins.airway_av.model import foreground_separation_loss, segmentation_loss  # noqa: E402
from tessera.plugins.airway_av.train import train  # noqa: E402


def test_separation_loss_sees_only_vessel_voxels_and_their_two_logits() -> None:
    target = torch.tensor([[0, 0, 1, 2]])  # background, background, artery, vein
    good = torch.tensor([[[9.0, -9.0, 0.0, 0.0],  # background logit: ignored by the term
                          [0.0, 0.0, 3.0, -3.0],  # artery
                          [0.0, 0.0, -3.0, 3.0]]])  # vein
    loss = foreground_separation_loss(good, target)
    expected = float(np.log1p(np.exp(-6.0)))  # two-class CE with a margin of 6 on both voxels
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    swapped = good[:, [0, 2, 1]]
    assert float(foreground_separation_loss(swapped, target)) > 5.0
    # background voxels and the background logit do not change it
    other_bg = good.clone()
    other_bg[:, 0] = torch.tensor([[-5.0, 5.0, 7.0, -7.0]])
    assert float(foreground_separation_loss(other_bg, target)) == pytest.approx(expected, rel=1e-4)
    # no vessel: zero, with a gradient path
    empty = foreground_separation_loss(good.requires_grad_(), torch.zeros_like(target))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_separation_term_adds_to_the_segmentation_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2, 4, 8, 8), generator=gen)
    base = segmentation_loss(logits, target, "softmax")
    with_term = segmentation_loss(logits, target, "softmax", separation_weight=0.5)
    assert float(with_term - base) == pytest.approx(
        0.5 * float(foreground_separation_loss(logits, target)), rel=1e-4)


@pytest.mark.slow
def test_one_role_alone_reuses_the_other_and_matches_training_both(tmp_path) -> None:
    """``roles=["artery-vein"]`` gives the same AV weights as training both, reusing the
    airway weights the first run left; without them it refuses."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    both = train(tmp_path, seed=0, quick=True)
    first_av = load_file(str(tmp_path / "artery_vein_demo.safetensors"))
    first_air = load_file(str(tmp_path / "airway_demo.safetensors"))
    alone = train(tmp_path, seed=0, quick=True, roles=["artery-vein"])
    second_av = load_file(str(tmp_path / "artery_vein_demo.safetensors"))
    assert first_av.keys() == second_av.keys()
    for key, value in first_av.items():
        assert torch.equal(value, second_av[key]), key
    # the reused airway weights are written back unchanged (not the bytes: safetensors
    # writes its metadata in hash-map order)
    second_air = load_file(str(tmp_path / "airway_demo.safetensors"))
    assert all(torch.equal(v, second_air[k]) for k, v in first_air.items())
    for key in ("heldout_airway_dsc", "heldout_artery_dsc", "heldout_vein_dsc"):
        assert alone[key] == both[key]
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["trained_roles"] == ["artery-vein"]
    assert list(record["reused_roles"]) == ["airway"]
    assert record["loss_log"]["airway"]  # carried over from the first run
    assert alone["recipe_cpu_minutes"] >= alone["cpu_minutes"]

    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match="no airway weights to reuse"):
        train(empty, seed=0, quick=True, roles=["artery-vein"])
    with pytest.raises(ValueError, match="roles"):
        train(empty, seed=0, quick=True, roles=["veins"])
