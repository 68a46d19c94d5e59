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


def test_run_table_prints_one_row_per_epoch_with_photos_seen_and_blank_unvalidated_figures(tmp_path, tool, capsys):
    """tools/run_table.py: the MODEL_CARD ledger's rows from a run's log.csv and config.yaml."""
    run_table = tool("run_table")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps_per_epoch: 300\n  batch_size: 16\n")
    head = "epoch,size,img_per_s,epoch_s,elapsed_min,val/maxF,val/wF,val/BIoU@0.5%\n"
    (run / "log.csv").write_text(head + "1,256,7.5,600,10,,,\n2,320,5.25,900,25.5,0.9651,0.9411,0.223\n")
    assert run_table.main([str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| epoch | size | photos/s") and "val maxF / wF / BIoU@0.5%" in lines[0]
    assert lines[2] == "| 1 | 256 | 7.5 | 10.0 | 4,800 | 0.17 |  |"
    assert lines[3] == "| 2 | 320 | 5.2 | 15.0 | 9,600 | 0.42 | 0.9651 / 0.9411 / 0.2230 |"
    assert run_table.main([str(run), "--from", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert run_table.main([str(tmp_path / "missing")]) == 2
    assert "no log.csv" in capsys.readouterr().err
