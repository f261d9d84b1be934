"""Subject checks and the TorchIO loaders on tiny NIfTI files."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from synth import blob_case, make_vs_dataset, write

from utilities.data.loading import (
    ImageSource,
    PatchDataset,
    SubjectCache,
    load_phase,
    make_subjects,
    make_training_loader,
    make_volume_loader,
)


def _sources(p, seeds=True):
    src = [ImageSource("image", p["image_crop"], "T2", False, "image"),
           ImageSource("label", p["label_crop"], "Label", True, "label")]
    if seeds:
        src.append(ImageSource("seeds", p["geodesic_label"], "GeodesicLabel", True, "expanded-seed label"))
    return src


def test_missing_files_all_listed(tmp_path):
    p = make_vs_dataset(tmp_path, 2, 1, 1)
    (p["image_crop"] / "vs_gk_1_T2.nii.gz").unlink()
    (p["geodesic_label"] / "vs_gk_2_GeodesicLabel.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        make_subjects(p["split"], "training", _sources(p))
    msg = str(err.value)
    assert "2 file(s)" in msg and "vs_gk_1_T2.nii.gz" in msg and "vs_gk_2_GeodesicLabel.nii.gz" in msg


def test_patch_dataset_shapes_padding_and_labels(tmp_path):
    p = make_vs_dataset(tmp_path, 2, 1, 1)  # volumes are 32×32×16 (X, Y, Z)
    cache = load_phase(p["split"], "training", _sources(p))
    ds = PatchDataset(cache, (32, 32, 32))  # larger than the volume along Z: padded
    item = ds[0]
    assert item["image"].shape == (1, 32, 32, 32) and item["image"].dtype == torch.float32
    assert item["seeds"].shape == (1, 32, 32, 32) and item["seeds"].dtype == torch.int64
    assert set(item["seeds"].unique().tolist()) <= {0, 1, 2}
    image = cache.get(0)["image"].data
    # padding uses the (z-normalised) image minimum, so the VM loss treats it as padding
    assert float(item["image"].min()) == pytest.approx(float(image.min()), abs=1e-5)
    small = PatchDataset(cache, (16, 16, 16))[1]
    assert small["image"].shape == (1, 16, 16, 16)
    loader = make_training_loader(cache, (16, 16, 16), batch_size=2, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(batches) == 1 and batches[0]["image"].shape == (2, 1, 16, 16, 16)


def test_preprocessing_is_z_normalised_canonical(tmp_path):
    direction = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)  # a permuted, flipped orientation
    p = make_vs_dataset(tmp_path, 1, 1, 1, direction=direction)
    cache = load_phase(p["split"], "validation", _sources(p))
    subject = cache.get(0)
    assert subject["image"].orientation == ("R", "A", "S")
    data = subject["image"].data
    assert float(data.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(data.std()) == pytest.approx(1.0, abs=1e-2)
    item = make_volume_loader(cache).dataset[0]
    assert item["label"].shape == item["image"].shape and item["path"].endswith("vs_gk_2_T2.nii.gz")


def test_cache_budget(tmp_path):
    p = make_vs_dataset(tmp_path, 2, 1, 1)
    cached = SubjectCache(make_subjects(p["split"], "training", _sources(p)), cache_gb=1.0)
    cached.fill()
    uncached = SubjectCache(make_subjects(p["split"], "training", _sources(p)), cache_gb=0.0)
    uncached.fill()
    assert cached.cached_bytes > 0 and uncached.cached_bytes == 0
    assert cached.get(1) is cached.get(1)  # decoded once
    assert torch.equal(cached.get(1)["image"].data, uncached.get(1)["image"].data)


def test_geometry_mismatch_errors(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 0)
    image, label = blob_case((16, 32, 24))
    write(label, p["label_crop"] / "vs_gk_1_Label.nii.gz")  # wrong shape
    with pytest.raises(ValueError, match="vs_gk_1_Label.nii.gz has size"):
        load_phase(p["split"], "training", _sources(p, seeds=False))
    image, label = blob_case((16, 32, 32))
    write(label, p["label_crop"] / "vs_gk_1_Label.nii.gz", spacing=(1.0, 1.0, 1.0))  # wrong spacing
    with pytest.raises(ValueError, match="has spacing"):
        load_phase(p["split"], "training", _sources(p, seeds=False))
    write(label, p["label_crop"] / "vs_gk_1_Label.nii.gz", origin=(9.0, 9.0, 9.0))  # wrong origin
    with pytest.raises(ValueError, match="has origin"):
        load_phase(p["split"], "training", _sources(p, seeds=False))


def test_nan_and_truncated_images(tmp_path):
    p = make_vs_dataset(tmp_path, 1, 1, 0)
    image, label = blob_case((16, 32, 32))
    image[3, 4, 5] = np.nan
    write(image, p["image_crop"] / "vs_gk_1_T2.nii.gz")
    with pytest.raises(ValueError, match="vs_gk_1_T2.nii.gz has 1 NaN or Inf"):
        load_phase(p["split"], "training", _sources(p))
    raw = gzip.compress(b"not a nifti at all")
    (p["image_crop"] / "vs_gk_1_T2.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot read image file .*vs_gk_1_T2.nii.gz"):
        load_phase(p["split"], "training", _sources(p))


def test_a_run_reads_its_split_once_and_checks_each_file_once(tmp_path, monkeypatch):
    """load_training_data (both phases of a stage-1 run): one read of the split file, one
    existence check per file (the split read into a Split and passed down)."""
    import utilities.data.loading as data
    import utilities.data.splits as splits

    p = make_vs_dataset(tmp_path, 2, 1, 1)
    reads, checks = [], []
    read, missing = splits.read_split, data.missing_files
    monkeypatch.setattr(splits, "read_split", lambda path: reads.append(path) or read(path))
    monkeypatch.setattr(data, "missing_files", lambda *a: checks.append((tuple(a[0]), str(a[1]), a[2])) or missing(*a))
    config = data.DataConfig(p["split"], p["image_crop"], "T2", p["label_crop"], "Label", p["geodesic_label"],
                             "GeodesicLabel", cache_gb=0.0)
    loaded = data.load_training_data(config, ["image", "seeds"])
    assert reads == [p["split"]]
    # training: image + seeds of 2 subjects; validation: image + label (required) of 1, seeds (optional) of 1
    assert len(checks) == 2 * 2 + 1 * 3 and len(set(checks)) == len(checks)
    assert [s["subject"] for s in loaded.train.subjects] == ["vs_gk_1", "vs_gk_2"]


def test_an_optional_source_without_its_folder_says_so(tmp_path, caplog):
    """An optional label folder that does not exist (e.g. the paper's default --path_labels on
    one's own data): one line naming the flag and the folder, not a missing file of it."""
    import logging

    p = make_vs_dataset(tmp_path, 1, 0, 0)
    labels = ImageSource("label", tmp_path / "nowhere", "Label", True, "label", "--path_labels/--label_postfix")
    with caplog.at_level(logging.INFO, logger="paseg"):
        cache = load_phase(p["split"], "training", [ImageSource("image", p["image_crop"], "T2", False, "image")],
                           optional=[labels], fill=False)
    assert len(cache) == 1
    assert f"training phase: label not used (--path_labels {tmp_path / 'nowhere'} does not exist)" in caplog.text
