"""tools/ship_model.py: an exported model into the bundled-model folder, measured, nothing lost."""

from __future__ import annotations

import json
import shutil

from cleancut.datasets import select
from cleancut.evaluate import OnnxModel, evaluate
from cleancut.models import file_sha256, load_spec
from cleancut.train.synthetic import make_shapes_dataset


def test_ship_model_measures_and_keeps_release_fields(tmp_path, tiny_model, tool, capsys):
    ship = tool("ship_model")
    data = make_shapes_dataset(tmp_path / "d", n=12, size=48)
    models = tmp_path / "models"
    models.mkdir()
    (models / "shipped.json").write_text(json.dumps({
        "name": "shipped", "file": "shipped.onnx", "input_size": [8, 8], "licence": "L-old",
        "description": "old text", "weights": "old weights"}))
    rc = ship.main([str(tiny_model), "--data", str(data), "--splits", "val", "train", "--models-dir", str(models),
                    "--name", "shipped", "--weights", "new weights", "--epochs", "3 + 4"])
    assert rc == 0
    written = json.loads((models / "shipped.json").read_text())
    assert written["name"] == "shipped" and written["file"] == "shipped.onnx"
    assert written["sha256"] == file_sha256(models / "shipped.onnx") == file_sha256(tiny_model)
    assert written["licence"] == "L-old" and written["description"] == "old text"  # carried over
    assert written["weights"] == "new weights" and written["training"]["epochs"] == "3 + 4"
    assert written["input_size"] == [32, 32]  # from the candidate's own spec, not the old one
    expected = evaluate(OnnxModel(load_spec(tiny_model)), select([data], ["val"])["val"]).results()
    assert written["metrics"]["val/MAE"] == round(expected["MAE"], 4)
    assert {"train/wF", "train/maxF", "val/Sm"} <= set(written["metrics"])
    load_spec(models / "shipped.json").verify()
    assert "val/wF" in capsys.readouterr().out


def test_ship_model_refuses_bad_candidates_without_writing(tmp_path, tiny_model, tool, capsys):
    ship = tool("ship_model")
    data = make_shapes_dataset(tmp_path / "d", n=6, size=48)
    models = tmp_path / "models"
    models.mkdir()
    lonely = tmp_path / "lonely.onnx"  # no spec beside it
    shutil.copyfile(tiny_model, lonely)
    assert ship.main([str(lonely), "--data", str(data), "--models-dir", str(models), "--splits", "val"]) == 2
    assert "expected a JSON model spec" in capsys.readouterr().err
    assert ship.main([str(tmp_path / "missing.onnx"), "--data", str(data), "--models-dir", str(models)]) == 2
    assert "expected an exported .onnx file" in capsys.readouterr().err
    assert list(models.iterdir()) == []
