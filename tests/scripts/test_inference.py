"""inference.py: checkpoint lookup, output geometry of non-RAS inputs, content against an
independent nibabel-based oracle."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from synth import make_vs_dataset

import inference
from networks import get_network
from utilities.data.layout import RunLayout
from utilities.models.checkpoints import save_model

LPS_PERMUTED = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # axes permuted and flipped


@pytest.mark.parametrize("direction", [None, LPS_PERMUTED])
def test_from_canonical_inverts_to_canonical(tmp_path, direction):
    p = make_vs_dataset(tmp_path, 1, 0, 0, direction=direction)
    path = p["image_crop"] / "vs_gk_1_T2.nii.gz"
    original = nib.load(str(path))
    canonical = tio.ToCanonical()(tio.ScalarImage(path))
    back = inference.from_canonical(canonical.data[0].numpy(), original.affine)
    np.testing.assert_array_equal(back, np.asarray(original.dataobj))


def test_missing_checkpoint_lists_existing(tmp_path):
    models = tmp_path / "U_Net" / "models"
    models.mkdir(parents=True)
    (models / "CP_best.pth").write_bytes(b"")
    (models / "CP_final.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"CP_best_model1.pth not found.*--epoch_inf \{best,final\}"):
        inference.checkpoint_path(tmp_path, "U_Net", "best_model1")


def _oracle(model, path):
    """Independent path: nibabel canonical reorientation, z-normalisation, one forward pass."""
    img = nib.load(str(path))
    canon = nib.as_closest_canonical(img)
    data = np.asarray(canon.dataobj, np.float32)
    data = (data - data.mean()) / data.std()
    with torch.no_grad():
        seg = model(torch.from_numpy(data)[None, None]).argmax(1)[0].numpy().astype(np.uint8)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(canon.affine), nib.io_orientation(img.affine))
    return nib.orientations.apply_orientation(seg, ornt)


@pytest.mark.parametrize("direction", [None, LPS_PERMUTED])
def test_inference_geometry_and_content(tmp_path, direction):
    p = make_vs_dataset(tmp_path, 1, 0, 2, direction=direction)
    torch.manual_seed(0)
    model = get_network("U_Net2D5", 1, 2).eval()
    save_model(tmp_path / "m" / "U_Net2D5" / "models" / "CP_best.pth", model, "U_Net2D5", epoch=1)
    # one window covering the canonical volume, so the oracle's single forward pass is comparable
    window = nib.as_closest_canonical(nib.load(str(p["image_crop"] / "vs_gk_2_T2.nii.gz"))).shape
    written = inference.main(["--model_dir", str(tmp_path / "m"), "--network", "U_Net2D5", "--dataset_split",
                              str(p["split"]), "--path_images", str(p["image_crop"]), "--spatial_shape",
                              *map(str, window), "--device", "cpu"])
    assert written == [RunLayout(tmp_path / "m", "U_Net2D5").prediction(s, "T2") for s in ("vs_gk_2", "vs_gk_3")]
    for out in written:
        subject = out.name.removesuffix("_T2_seg.nii.gz")
        src = nib.load(str(p["image_crop"] / f"{subject}_T2.nii.gz"))
        seg = nib.load(str(out))
        assert seg.shape == src.shape
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
        assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(src.affine)
        assert seg.get_data_dtype() == np.uint8
        expected = _oracle(model, p["image_crop"] / f"{subject}_T2.nii.gz")
        got = np.asarray(seg.dataobj)
        assert (got == expected).mean() > 0.999  # identical up to float rounding at ties
        assert len(np.unique(got)) <= 2


def test_wrong_network_checkpoint(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 0, 1)
    save_model(tmp_path / "U_Net2D5" / "models" / "CP_best.pth", get_network("U_Net", 1, 2), "U_Net")
    with pytest.raises(ValueError, match="holds a U_Net network, not U_Net2D5"):
        inference.main(["--model_dir", str(tmp_path), "--dataset_split", str(p["split"]), "--path_images",
                        str(p["image_crop"]), "--spatial_shape", "32", "32", "16"])
    (tmp_path / "U_Net2D5" / "models" / "CP_best.pth").write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch file, or a truncated or damaged one"):
        inference.main(["--model_dir", str(tmp_path), "--dataset_split", str(p["split"]), "--path_images",
                        str(p["image_crop"]), "--spatial_shape", "32", "32", "16"])


def test_published_checkpoint_runs_through_inference(tmp_path):
    """A checkpoint in the authors' released layout (a bare state dict with their key names) is
    detected, converted and gives exactly the predictions of the same weights saved by us; one
    of another network is refused with the network it holds."""
    from networks.published import ours_to_published

    p = make_vs_dataset(tmp_path, 1, 0, 1)
    torch.manual_seed(3)
    model = get_network("U_Net2D5", 1, 2).eval()
    save_model(tmp_path / "ours" / "U_Net2D5" / "models" / "CP_best.pth", model, "U_Net2D5", epoch=1)
    published = tmp_path / "published" / "U_Net2D5" / "models" / "CP_best.pth"
    published.parent.mkdir(parents=True)
    torch.save(ours_to_published(model.state_dict(), "U_Net2D5"), published)
    args = ["--network", "U_Net2D5", "--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]),
            "--spatial_shape", "32", "32", "16", "--device", "cpu"]
    ours = inference.main(["--model_dir", str(tmp_path / "ours"), *args])
    theirs = inference.main(["--model_dir", str(tmp_path / "published"), *args])
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(nib.load(str(a)).dataobj), np.asarray(nib.load(str(b)).dataobj))
    unet = get_network("U_Net", 1, 2)
    torch.save(ours_to_published(unet.state_dict(), "U_Net"), published)
    with pytest.raises(ValueError, match=r"is a published U_Net checkpoint, not U_Net2D5; pass --network U_Net"):
        inference.main(["--model_dir", str(tmp_path / "published"), *args])


def test_cases_smaller_than_the_window_are_named(tmp_path, capsys):
    """MONAI pads a volume smaller than the window; the log says which cases and to what."""
    from utilities.core.logs import setup_logger
    from utilities.models.model_package import ModelSpec

    setup_logger(None)
    specs = [ModelSpec("model1", "U_Net2D5", tmp_path / "a.pth", (64, 64, 32), "a.pth")]
    sizes = {"a": (64, 64, 32), "b": (80, 64, 16), "c": (32, 32, 16)}
    assert inference._note_padding(specs, sizes) == ["b", "c"]
    assert "2 of 3 case(s) smaller than the sliding window 64×64×32 in some axis (b: 80×64×16): padded to the window " \
           "with the image's minimum" in capsys.readouterr().out
    assert inference._note_padding(specs, {"a": (64, 64, 32)}) == []
    assert "smaller than the sliding window" not in capsys.readouterr().out
