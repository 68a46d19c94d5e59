"""Hyperparameter search on tiny synthetic data: samplers, pruning, a resumable SQLite study, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.errors import ConfigError  # noqa: E402
from cleancut.train.checkpoint import load  # noqa: E402
from cleancut.train.tune import check_space, grid_values, make_pruner, run_study  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

FIXED = ["data.size=32", "data.num_workers=0", "train.batch_size=8", "train.precision=fp32", "train.threads=1",
         "train.early_stopping=null", "train.epochs=2", "model.arch=unet", "model.kwargs={width: 4, depth: 2}",
         "data.augment=0"]
SPACE = """\
optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true, grid: [0.002, 0.008]}
model.kwargs.width: {type: categorical, choices: [4, 6]}
loss.overlap_weight: {type: float, low: 0.0, high: 1.0, step: 0.5}
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=24, size=32, seed=4)


@pytest.fixture
def space(tmp_path) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(SPACE)
    return p


def _tune(shapes, space, tmp_path, *extra, trials=2, sampler="random", study="s"):
    return cli_main(["tune", "--space", str(space), "--trials", str(trials), "--sampler", sampler,
                     "--storage", str(tmp_path / "tune.db"), "--study", study, "--out", str(tmp_path / "out"),
                     *extra, f"data.roots=[{shapes}]", *FIXED])


def test_study_is_stored_resumed_and_summarised(shapes, space, tmp_path, capsys):
    assert _tune(shapes, space, tmp_path, trials=2) == 0
    first = capsys.readouterr().out
    assert "study s: 2 trials (2 complete)" in first and "best: trial" in first
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert len(study.trials) == 2
    params_before = [t.params for t in study.trials]
    # re-running the same command continues the same study
    assert _tune(shapes, space, tmp_path, trials=2) == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert len(study.trials) == 4 and [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [t.params for t in study.trials[2:]] != params_before, "a resumed sampler does not repeat the draws"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["best"]["number"] in range(4)
    assert 0 <= summary["best"]["value"] <= 1 and summary["monitor"] == "wF"
    assert set(summary["importances"]) == {"optim.lr", "model.kwargs.width", "loss.overlap_weight"}
    assert abs(sum(summary["importances"].values()) - 1) < 1e-6
    assert (tmp_path / "out" / "history.png").stat().st_size > 10_000
    # each trial is an ordinary run with the sampled values and the per-epoch monitor reported
    for t in summary["trials"]:
        assert sorted(int(k) for k in t["intermediate"]) == [1, 2]  # epochs (JSON keys are strings)
        cfg = load(t["run"])["config"]
        assert cfg["optim"]["lr"] == pytest.approx(t["params"]["optim.lr"])
        assert cfg["model"]["kwargs"] == {"width": t["params"]["model.kwargs.width"], "depth": 2}
    # inspect only
    assert cli_main(["tune", "--storage", str(tmp_path / "tune.db"), "--study", "s", "--trials", "0"]) == 0
    assert "study s: 4 trials" in capsys.readouterr().out


def test_one_trial_has_no_importances_but_a_summary(shapes, space, tmp_path, capsys):
    assert _tune(shapes, space, tmp_path, trials=1, sampler="tpe") == 0
    out = capsys.readouterr().out
    assert "importances: n/a (needs at least 2 completed trials (have 1))" in out
    assert (tmp_path / "out" / "history.png").is_file()


def test_grid_sampler_stops_when_the_grid_is_done(shapes, tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text("optim.lr: {type: float, low: 0.001, high: 0.01, grid: [0.002, 0.008]}\n")
    assert _tune(shapes, space, tmp_path, trials=10, sampler="grid", study="g") == 0
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert sorted(t.params["optim.lr"] for t in study.trials) == [0.002, 0.008]


def test_pruned_trials_stop_training_early(shapes, space, tmp_path):
    class PruneAfterFirstTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number > 0

    study, summary = run_study(space, None, trials=2, study_name="p", storage=str(tmp_path / "p.db"), sampler="random",
                               out=tmp_path / "pout", overrides=[f"data.roots=[{shapes}]", *FIXED, "train.epochs=3"],
                               pruner=PruneAfterFirstTrial())
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED"]
    pruned = study.trials[1]
    assert list(pruned.intermediate_values) == [1]  # reported once, then stopped
    assert load(pruned.user_attrs["run"])["epoch"] == 1
    assert summary["states"]["PRUNED"] == 1


@pytest.mark.parametrize("warmup, pruned", [(0, True), (1, False)])
def test_median_pruner_spares_the_warmup_epochs(warmup, pruned):
    study = optuna.create_study(direction="maximize", pruner=make_pruner(True, startup=1, warmup=warmup))
    good = study.ask()
    good.report(0.9, 1)
    good.report(0.95, 2)
    study.tell(good, 0.95)
    bad = study.ask()
    bad.report(0.1, 1)  # epoch 1, far below the median
    assert bool(bad.should_prune()) is pruned
    assert make_pruner(False).__class__.__name__ == "NopPruner"


def test_median_pruner_flag_runs(shapes, space, tmp_path, capsys):
    assert _tune(shapes, space, tmp_path, "--prune", "--prune-startup", "1", "--prune-warmup", "0", trials=3) == 0
    assert "study s: 3 trials" in capsys.readouterr().out


def test_space_errors(tmp_path, shapes):
    with pytest.raises(ConfigError, match="categorical needs"):
        check_space({"optim.lr": {"type": "categorical"}})
    with pytest.raises(ConfigError, match="low <= high"):
        check_space({"optim.lr": {"type": "float", "low": 1, "high": 0}})
    with pytest.raises(ConfigError, match="continuous"):
        grid_values(check_space({"optim.lr": {"type": "float", "low": 0.1, "high": 1}}))
    assert grid_values(check_space({"k": {"type": "int", "low": 8, "high": 24, "step": 8}})) == {"k": [8, 16, 24]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim.lrr: {type: float, low: 0.1, high: 1}\n")
    with pytest.raises(ConfigError, match="unknown config key"):
        run_study(bad, None, trials=1, study_name="x", storage=str(tmp_path / "x.db"),
                  overrides=[f"data.roots=[{shapes}]", *FIXED])
