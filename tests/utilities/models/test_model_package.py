"""export_model.py and ``inference.py --model``: a run (or the authors' checkpoint) in one zip that
predicts exactly what the run folder predicts; its card; one-line errors for bad packages."""
from __future__ import annotations

import json
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from helpers import copy_runs, inference_args, one_line

import export_model
import inference
from networks import get_network
from utilities.models.model_package import MANIFEST, read_manifest, spacing_warning
from utilities.workflow.cli import run_main


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    """This module's copy of the session's tiny trained runs (conftest.py: ``tiny_runs``): two
    stage-1 runs (2 epochs, seed 0; 1 epoch, seed 8) and the SCM run on them."""
    p, trained = tiny_runs
    return p, copy_runs(trained, tmp_path_factory.mktemp("zip"))


def _arrays(paths):
    return [np.asarray(nib.load(str(f)).dataobj) for f in paths]


@pytest.mark.slow
def test_package_predicts_like_the_run(runs, tmp_path, capsys):
    p, root = runs
    package = tmp_path / "model.zip"
    manifest = export_model.main(["--model_dir", str(root / "run1"), "--output", str(package)])
    assert manifest == read_manifest(package)
    (model,) = manifest["models"]
    best = torch.load(root / "run1" / "U_Net2D5" / "models" / "CP_best.pth", weights_only=True)
    log = pd.read_csv(root / "run1" / "U_Net2D5" / "log.csv")
    assert model["network"] == "U_Net2D5" and model["spatial_shape"] == [32, 32, 16]
    assert model["epoch"] == best["epoch"] == int(log["epoch"][log["val_dice"].idxmax()])
    assert model["value"] == best["value"] == pytest.approx(log["val_dice"].max(), abs=1e-12)
    assert manifest["torch_version"] == torch.__version__ and manifest["project_version"] == "0.1.0"
    assert manifest["normalisation"] == "zscore" and manifest["num_classes"] == 2
    data = manifest["card"]["training_data"]
    assert data["available"] and data["cases"] == 2 and data["cases_read"] == 2
    assert data["spacing_median_mm"] == [0.5, 0.5, 1.5] and data["size_min"] == [32, 32, 16]
    (command,) = manifest["card"]["training_commands"]
    assert command.startswith("python train_gatedcrfloss3d22d_multiview_varianceloss.py ")
    assert "--network U_Net2D5" in command and "--spatial_shape 32 32 16" in command and "--seed 7" in command
    with zipfile.ZipFile(package) as z:
        card = z.read("model_card.md").decode()
    assert f"validation dice {best['value']:.4f}" in card and "2 training case(s)" in card

    reference = _arrays(inference.main(inference_args(p, root / "run1")))
    split = inference.main(["--model", str(package), "--dataset_split", str(p["split"]), "--path_images",
                            str(p["image_crop"]), "--output_folder", str(tmp_path / "split"), "--device", "cpu"])
    folder = inference.main(["--model", str(package), "--input_folder", str(p["image_crop"]), "--image_postfix", "T2",
                             "--output_folder", str(tmp_path / "folder"), "--device", "cpu"])
    for a, b in zip(reference, _arrays(split), strict=True):
        np.testing.assert_array_equal(a, b)
    chosen = _arrays([f for f in folder if f.name in {s.name for s in split}])
    for a, b in zip(reference, chosen, strict=True):
        np.testing.assert_array_equal(a, b)

    # a scan of 3x coarser voxels than the training images' (0.5 x 0.5 x 1.5 mm): one warning, still segmented
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    image = sitk.ReadImage(str(p["image_crop"] / "vs_gk_1_T2.nii.gz"))
    image.SetSpacing((1.5, 1.5, 4.5))
    sitk.WriteImage(image, str(coarse / "far_T2.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(p["image_crop"] / "vs_gk_2_T2.nii.gz")), str(coarse / "near_T2.nii.gz"))
    capsys.readouterr()
    written = inference.main(["--model", str(package), "--input_folder", str(coarse), "--output_folder",
                              str(tmp_path / "coarse_out"), "--device", "cpu"])
    assert [w.name for w in written] == ["far_T2.nii.gz", "near_T2.nii.gz"]
    warnings = [line.split(" WARNING ", 1)[1] for line in capsys.readouterr().out.splitlines() if " WARNING " in line]
    assert warnings == [
        "1 of 2 scan(s) have a voxel size more than 2x finer or coarser than the training images' (0.5 x 0.5 x 1.5 "
        "mm, sorted), e.g. far_T2: 1.5 x 1.5 x 4.5 mm; PA-Seg does not resample, so the network sees their "
        "structures at another scale: resample them to the training voxel size first"]


@pytest.mark.parametrize("spacings, far", [
    ({"axial": (0.5, 0.5, 1.5), "sagittal": (1.5, 0.5, 0.5)}, []),              # the same voxels, another order
    ({"fine": (0.15, 0.15, 1.5), "edge": (1.0, 1.0, 3.0)}, ["fine"]),           # 0.15 < 0.4/2; edge: 2x exactly
    ({"thick": (0.5, 0.5, 6.0), "thin": (0.45, 0.45, 0.45)}, ["thick", "thin"]),
])
def test_spacing_warning_names_scans_beyond_twice_the_training_range(spacings, far):
    training = {"available": True, "spacing_min_mm": [0.4, 0.4, 1.0], "spacing_max_mm": [0.5, 0.5, 1.5]}
    warning = spacing_warning(training, spacings)
    if not far:
        assert warning is None
    else:
        assert warning.startswith(f"{len(far)} of 2 scan(s) have a voxel size more than 2x finer or coarser than "
                                  f"the training images' (0.4-0.5 x 0.4-0.5 x 1-1.5 mm, sorted), e.g. {far[0]}: ")
    assert spacing_warning({"available": False}, spacings) is None


@pytest.mark.slow
def test_scm_package_holds_both_networks(runs, tmp_path):
    p, root = runs
    package = tmp_path / "scm.zip"
    manifest = export_model.main(["--model_dir", str(root / "scm"), "--output", str(package), "--no_fingerprint"])
    assert [m["checkpoint"] for m in manifest["models"]] == ["CP_best_model1.pth", "CP_best_model2.pth"]
    assert manifest["card"]["training_commands"][0].startswith("python train_SCM.py ")
    common = ["--dataset_split", str(p["split"]), "--path_images", str(p["image_crop"]), "--device", "cpu",
              "--save_probabilities"]
    from_run = inference.main(["--model_dir", str(root / "scm"), "--ensemble", *common, "--output_folder",
                               str(tmp_path / "a")])
    from_zip = inference.main(["--model", str(package), "--ensemble", *common, "--output_folder", str(tmp_path / "b")])
    for a, b in zip(from_run, from_zip, strict=True):
        for name in (a.name, a.name.replace(".nii.gz", "_prob.nii.gz")):
            np.testing.assert_array_equal(*_arrays([a.parent / name, b.parent / name]))
    # without --ensemble: model 1 alone, as best_model1 of the run
    first = inference.main(["--model", str(package), *common, "--output_folder", str(tmp_path / "c")])
    model1 = inference.main(inference_args(p, root / "scm", "--epoch_inf", "best_model1", "--output_folder",
                                           str(tmp_path / "d")))
    for a, b in zip(_arrays(first), _arrays(model1), strict=True):
        np.testing.assert_array_equal(a, b)
    # --epoch_inf picks the model packed from that checkpoint: model 2 alone, as best_model2 of the run
    second = inference.main(["--model", str(package), "--epoch_inf", "best_model2", *common, "--output_folder",
                             str(tmp_path / "e")])
    model2 = inference.main(inference_args(p, root / "scm", "--epoch_inf", "best_model2", "--output_folder",
                                           str(tmp_path / "f")))
    for a, b in zip(_arrays(second), _arrays(model2), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError) as err:
        inference.main(["--model", str(package), "--epoch_inf", "final", *common, "--output_folder",
                        str(tmp_path / "g")])
    assert str(err.value) == (f"--model {package} holds model1 (U_Net2D5, from CP_best_model1.pth), model2 (U_Net2D5, "
                              "from CP_best_model2.pth): none from CP_final.pth (--epoch_inf final); pick one it holds "
                              "(e.g. --epoch_inf best_model2), or export the run again with --epoch_inf final")


@pytest.mark.slow
def test_published_checkpoint_packed(runs, tmp_path):
    """The authors' released layout (a bare state dict with their key names) is packed converted and
    predicts as the same weights in our layout."""
    from networks.published import ours_to_published

    p, root = runs
    weights = torch.load(root / "run1" / "U_Net2D5" / "models" / "CP_best.pth", weights_only=True)["state_dict"]
    published = tmp_path / "released.pth"
    torch.save(ours_to_published(weights, "U_Net2D5"), published)
    package = tmp_path / "released.zip"
    with pytest.raises(ValueError) as err:
        export_model.main(["--checkpoint", str(published), "--output", str(package)])
    assert one_line(err) == (f"the patch size of {published} is unknown (no training arguments beside it); pass "
                             "--spatial_shape X Y Z")
    manifest = export_model.main(["--checkpoint", str(published), "--spatial_shape", "32", "32", "16", "--output",
                                  str(package)])
    assert manifest["models"][0]["network"] == "U_Net2D5"  # read from the released keys
    assert not manifest["card"]["training_data"]["available"]
    reference = _arrays(inference.main(inference_args(p, root / "run1")))
    got = inference.main(["--model", str(package), "--dataset_split", str(p["split"]), "--path_images",
                          str(p["image_crop"]), "--output_folder", str(tmp_path / "out"), "--device", "cpu"])
    for a, b in zip(reference, _arrays(got), strict=True):
        np.testing.assert_array_equal(a, b)


def _rewrite(package, target, **changes):
    with zipfile.ZipFile(package) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members[MANIFEST])
    for key, value in changes.items():
        if key in ("network", "spatial_shape"):
            manifest["models"][0][key] = value
        else:
            manifest[key] = value
    members[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return target


@pytest.mark.slow
def test_bad_packages_one_line(runs, tmp_path, capsys):
    p, root = runs
    package = tmp_path / "model.zip"
    export_model.main(["--model_dir", str(root / "run1"), "--output", str(package), "--no_fingerprint"])
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("readme.txt", "holiday pictures")
    damaged = tmp_path / "damaged.zip"
    blob = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as z:
        info = z.getinfo("weights/model1.pth")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    blob[start:start + 8] = b"\x00" * 8
    damaged.write_bytes(bytes(blob))
    newer = _rewrite(package, tmp_path / "newer.zip", package_version=2)
    other_major = _rewrite(package, tmp_path / "major.zip", project_version="1.0.0")
    unknown = _rewrite(package, tmp_path / "unknown.zip", network="V_Net")
    mislabelled = _rewrite(package, tmp_path / "mislabelled.zip", network="AttU_Net")
    too_small = _rewrite(package, tmp_path / "small.zip", spatial_shape=[16, 16, 16])
    cases = [
        (truncated, [], f"--model {truncated} is not a zip file (or a truncated one); pass a model package written by "
                        "export_model.py"),
        (foreign, [], f"--model {foreign} is a zip but not a PA-Seg model package (no paseg_model.json); pass a "
                      "package written by export_model.py"),
        (newer, [], f"--model {newer} is a package of format version 2 (PA-Seg 0.1.0); this PA-Seg 0.1.0 reads "
                    "version 1: use a matching PA-Seg version"),
        (other_major, [], f"--model {other_major} was made by PA-Seg 1.0.0, incompatible with this PA-Seg 0.1.0 "
                          "(another major version): use a matching PA-Seg version"),
        (unknown, [], f"--model {unknown} holds a V_Net network, which this version does not know (known: AttU_Net, "
                      "U_Net, U_Net2D5); update PA-Seg"),
        # what the manifest set is named as its key, not as a flag the user did not pass
        (mislabelled, [], f"checkpoint {mislabelled}:model1 holds a U_Net2D5 network, not AttU_Net; the package's "
                          "paseg_model.json names the wrong network (models[0].network AttU_Net); export the model "
                          "again with export_model.py"),
        (too_small, [], f"the patch size of {too_small}:model1 (paseg_model.json key models[0].spatial_shape) "
                        "[16, 16, 16] does not fit U_Net2D5: "),
        (package, ["--network", "U_Net"], f"--model {package} holds model1 (U_Net2D5, from CP_best.pth): no U_Net; "
                                          "drop --network or pass one of U_Net2D5"),
        (package, ["--model_dir", str(root / "run1")], "--model and --model_dir exclude each other; pass the package "
                                                       "(or checkpoint) or the run folder"),
    ]
    for path, extra, message in cases:
        argv = ["--model", str(path), *extra, "--input_folder", str(p["image_crop"]), "--output_folder",
                str(tmp_path / "out"), "--device", "cpu"]
        assert run_main(inference.main, argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: {message}\n" or (message.endswith(": ") and err.startswith(f"error: {message}")
                                                and err.count("\n") == 1)
    assert run_main(inference.main, ["--model", str(damaged), "--input_folder", str(p["image_crop"]),
                                     "--output_folder", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # a checksum or a decompression failure, depending on the bytes hit
    assert err.count("\n") == 1 and err.startswith(f"error: --model {damaged} is damaged (")
    assert err.endswith("); export it again\n")
    assert not (tmp_path / "out").exists()
    # export: an existing output is kept unless --overwrite; a checkpoint of another network is named
    assert run_main(export_model.main, ["--model_dir", str(root / "run1"), "--output", str(package)]) == 2
    assert capsys.readouterr().err == (f"error: --output {package} exists; pass --overwrite to replace it, or choose "
                                       "another --output\n")
    other = tmp_path / "unet.pth"
    torch.save(get_network("U_Net", 1, 2).state_dict(), other)
    assert run_main(export_model.main, ["--checkpoint", str(other), "--network", "U_Net2D5", "--spatial_shape", "32",
                                        "32", "16", "--output", str(tmp_path / "x.zip")]) == 2
    assert "does not fit network U_Net2D5" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def _card_manifest(checkpoint: str, commands: list[str]) -> dict:
    return {"project_version": "0.1.0", "torch_version": "2.13.0", "normalisation": "zscore", "num_classes": 2,
            "models": [{"name": "model1", "network": "U_Net2D5", "checkpoint": checkpoint,
                        "spatial_shape": [32, 32, 16], "epoch": 3, "metric": "dice", "value": 0.5}],
            "card": {"training_data": {"available": False, "reason": "not given"}, "training_commands": commands}}


def test_card_shows_names_and_commands_verbatim():
    """The checkpoint name and the training command are data: a backtick or a line break in them
    cannot end the code span, the list item or the code block they stand in."""
    from utilities.models.model_package import _card_markdown

    command = "python train_gatedcrfloss3d22d_multiview_varianceloss.py --model_dir 'runs/a\n```\n# b'"
    card = _card_markdown(_card_manifest("CP_`best`\n# x.pth", [command, "python train_SCM.py --seed 1"]))
    models = card.split("## Models\n")[1].split("\n\n")[0]
    # a code span of two backticks around a text holding single ones; the line break shown as a space
    assert models == "- `model1`: U_Net2D5, from ``CP_`best` # x.pth`` (epoch 3), validation dice 0.5000"
    block = card.split("## Training command\n\n")[1]
    # fenced by four backticks (one more than the command's run of three): every line verbatim
    assert block == f"````sh\n{command}\npython train_SCM.py --seed 1\n````\n"
    plain = _card_markdown(_card_manifest("CP_best.pth", ["python train_SCM.py"]))
    assert "from `CP_best.pth` (epoch 3)" in plain and plain.endswith("```sh\npython train_SCM.py\n```\n")
    edge = _card_markdown(_card_manifest("`x`", []))
    assert "from `` `x` `` (epoch 3)" in edge and edge.endswith("not recorded (no CP_latest*.pth with the run's "
                                                                 "arguments)\n")


def test_card_parses_as_written():
    """What a Markdown reader makes of the card above: one code span per name, one code block
    holding the commands exactly."""
    markdown_it = pytest.importorskip("markdown_it")
    from utilities.models.model_package import _card_markdown

    command = "python train_SCM.py --model_dir 'a\n```\n# b'"
    tokens = markdown_it.MarkdownIt().parse(_card_markdown(_card_manifest("CP_`best`\n# x.pth", [command])))
    fences = [t for t in tokens if t.type == "fence"]
    assert [f.content for f in fences] == [command + "\n"]
    spans = [c.content for t in tokens if t.type == "inline" for c in t.children or [] if c.type == "code_inline"]
    assert spans == ["model1", "CP_`best` # x.pth"]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["PA-Seg model: U_Net2D5", "Models", "Training data", "Training command"]


def test_a_run_without_its_final_checkpoint_is_packed_with_a_warning(runs, tmp_path, capsys):
    """A stopped run (no CP_final.pth): packed, and one warning says the run did not end."""
    _, root = runs
    run = tmp_path / "stopped"
    shutil.copytree(root / "run1", run)
    (run / "U_Net2D5" / "models" / "CP_final.pth").unlink()
    capsys.readouterr()
    export_model.main(["--model_dir", str(run), "--output", str(tmp_path / "m.zip"), "--no_fingerprint"])
    out = capsys.readouterr().out
    assert (f"WARNING {run / 'U_Net2D5' / 'models'} holds no CP_final*.pth: the run stopped (or is still training) "
            "before its last epoch") in out
    export_model.main(["--model_dir", str(root / "run1"), "--output", str(tmp_path / "n.zip"), "--no_fingerprint"])
    assert "CP_final" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_checkpoint_packed_with_its_own_patch_keeps_its_provenance(runs, tmp_path, capsys):
    """--checkpoint from a run folder with --spatial_shape given: the card still records the
    run's training data and command (the patch size alone is the flag's)."""
    _, root = runs
    checkpoint = next((root / "run1").glob("*/models/CP_best.pth"))
    manifest = export_model.main(["--checkpoint", str(checkpoint), "--spatial_shape", "32", "32", "16", "--output",
                                  str(tmp_path / "x.zip")])
    assert "no training arguments" not in capsys.readouterr().out
    assert manifest["models"][0]["spatial_shape"] == [32, 32, 16]
    command = manifest["card"]["training_commands"][0]
    assert command.startswith("python train_gatedcrfloss3d22d_multiview_varianceloss.py ")
    assert manifest["card"]["training_data"]["available"]
