"""benchmarks/teach.py (issue 34's measurement): the seeded draw of a kind's held-out and training
photos, the replay root that leaves the held-out photos out, and the whole script on a tiny model
and generated photos (registered in a throwaway folder, removed after, resumed without rework)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from cleancut import datasets
from cleancut.train import archs
from cleancut.train.checkpoint import atomic_save
from cleancut.train.config import load_config
from cleancut.train.export import export_onnx
from cleancut.train.finetune import replay_pairs
from cleancut.train.synthetic import make_shapes_dataset

SIZE = 64


def _teach():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "teach.py"
    spec = importlib.util.spec_from_file_location("teach", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["teach"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


teach = _teach()


def _entries(counts: dict[tuple[str, str], int]) -> list:
    return [teach.Entry(s, f"{prefix}{i:03d}", split, f"/x/{s}/im/{i}.jpg", f"/x/{s}/gt/{i}.png")
            for (s, split), n in counts.items() for prefix in ["a_", "b_"] for i in range(n)]


def test_the_draw_is_seeded_nested_disjoint_and_takes_unseen_photos_first():
    entries = _entries({("pets", "val-objects"): 30, ("pets", "train"): 100, ("pets", "val"): 20,
                        ("other", "train"): 50})
    kind = teach.Kind("k", "pets a", ("pets",), ("a_",), held_splits=("val-objects", "train"))
    d = teach.draw(kind, entries, held_out=40, n_train=20, seed=1)
    assert len(d.held_out) == 40 and len(d.train) == 20
    assert all(e.set == "pets" and e.stem.startswith("a_") for e in d.held_out + d.train + d.rest)
    assert sum(e.split == "val-objects" for e in d.held_out) == 30  # all the unseen photos first
    assert not {e.key for e in d.held_out} & {e.key for e in d.train}
    assert all(e.split == "train" for e in d.train) and all(e.split != "val" for e in d.held_out + d.train + d.rest)
    assert not {e.key for e in d.rest} & {e.key for e in d.held_out + d.train}
    again = teach.draw(kind, entries, held_out=40, n_train=10, seed=1)
    assert again.held_out == d.held_out and again.train == d.train[:10]  # 10 photos: a prefix of the 20
    assert teach.draw(kind, entries, held_out=40, n_train=20, seed=2).held_out != d.held_out
    with pytest.raises(ValueError, match="training photos"):
        teach.draw(kind, entries, held_out=40, n_train=200, seed=1)


def test_no_kind_draws_the_forgetting_or_test_photos():
    for split in ("val", "duts-val", "duts-te"):
        with pytest.raises(ValueError, match="never draw"):
            teach.Kind("bad", "bad", ("pets",), held_splits=(split,))
    assert len(teach.KINDS) == 3
    assert all(not teach.NEVER_DRAWN & set(k.held_splits + k.train_splits) for k in teach.KINDS.values())


def _root(tmp_path: Path) -> Path:
    """Two generated sets with a splits.csv: set 'shapes' (train, val-objects) and 'more' (train,
    val, duts-val)."""
    root = tmp_path / "data"
    make_shapes_dataset(root / "shapes", n=16, size=SIZE, seed=1)
    make_shapes_dataset(root / "more", n=12, size=SIZE, seed=2)
    rows = ["set,stem,split"]
    for i, stem in enumerate(sorted(p.stem for p in (root / "shapes" / "im").iterdir())):
        rows.append(f"shapes,{stem},{'val-objects' if i < 6 else 'train'}")
    for i, stem in enumerate(sorted(p.stem for p in (root / "more" / "im").iterdir())):
        rows.append(f"more,{stem},{('val', 'duts-val', 'train')[i % 3]}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    return root


def test_the_replay_root_leaves_the_held_out_photos_out_and_the_data_alone(tmp_path):
    root = _root(tmp_path)
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    entries = teach.catalogue([str(root)])
    kind = teach.Kind("shapes", "generated shapes", ("shapes",), held_splits=("val-objects", "train"))
    d = teach.draw(kind, entries, held_out=8, n_train=5, seed=0)
    mirror = teach.replay_mirror(entries, d.excluded, tmp_path / "mirror")
    train = datasets.select([mirror], ["train"])["train"]
    assert {(p.set, p.stem) for p in train} == {e.key for e in entries if e.split == "train"} - {e.key for e in d.held_out}
    assert {(p.set, p.stem) for p in replay_pairs([str(mirror)], n=1000)}.isdisjoint(e.key for e in d.held_out)
    teach.replay_mirror(entries, d.excluded, tmp_path / "mirror")  # again: idempotent
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    kwargs = {"width": 0.5, "decoder": 8}
    cfg = load_config(None, ["model.arch=cutnet", f"data.size={SIZE}"])
    cfg.model.kwargs = kwargs
    torch.manual_seed(0)
    model = archs.build("cutnet", **kwargs)
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, folder / "t.pt")
    export_onnx(folder / "t.pt", folder / "tiny-base.onnx", name="tiny-base", input_format="uint8_nhwc",
                keep_aspect=True, extra={"alpha_temperature": 0.5})
    return folder / "tiny-base.onnx"


@pytest.mark.slow
def test_the_script_end_to_end_on_a_tiny_model_and_resumes(tmp_path, tiny_base, monkeypatch, capsys):
    root = _root(tmp_path)
    monkeypatch.setattr(teach, "KINDS", {"shapes": teach.Kind("shapes", "generated shapes", ("shapes",),
                                                              held_splits=("val-objects", "train"))})
    monkeypatch.setenv("CLEANCUT_MODELS_DIR", str(tmp_path / "users-own"))
    out = tmp_path / "out"
    argv = ["--data", str(root), "--sizes", "5", "--held-out", "6", "--minutes", "0.05", "--stride", "1",
            "--base", str(tiny_base), "--sheet-photos", "2", "--speed-photos", "2", "--out", str(out)]
    assert teach.main(argv) == 0
    result = json.loads((out / "runs" / "shapes-5" / "result.json").read_text())
    assert result["photos"] == 5 and result["held_out"]["photos"] == 6
    assert set(result["forgetting"]) == {"val", "duts-val"} and result["forgetting"]["val"]["photos"] == 4
    assert result["latency"]["new_ms"] > 0 and result["latency"]["base_ms"] > 0
    assert "QuantizeLinear" in result["graph"]["differ"]  # a float base here; the shipped one is int8 like the new
    assert result["finetune"]["train"] == 4  # finetune holds out 1 of the 5 for itself
    assert "| shapes | 5 photos |" in (out / "teach.md").read_text()
    assert (out / "sheet.jpg").is_file() and len(list((out / "runs" / "shapes-5" / "alpha").iterdir())) == 6
    assert not list((out / "models").glob("*.json"))  # the model was removed once scored
    assert not (tmp_path / "users-own").exists()  # and never registered in the user's folder
    capsys.readouterr()
    assert teach.main(argv) == 0  # resumed: nothing trained again
    assert "done already" in capsys.readouterr().err
