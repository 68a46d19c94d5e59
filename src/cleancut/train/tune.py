"""Hyperparameter search with Optuna, every trial an ordinary :class:`~cleancut.train.loop.Trainer` run.

    cleancut tune --space configs/tune-space.yaml --config configs/cutnet.yaml --trials 20 \\
        --sampler tpe --storage runs/tune.db --study cutnet-lr --prune train.epochs=6
    cleancut tune --storage runs/tune.db --study cutnet-lr --trials 0      # inspect: summary + plot only

The search space is a YAML mapping from config keys (any ``key=value`` override) to a distribution::

    optim.lr:           {type: float, low: 3.0e-4, high: 1.0e-2, log: true, grid: [1.0e-3, 3.0e-3]}
    train.batch_size:   {type: categorical, choices: [8, 16]}
    model.kwargs.width: {type: int, low: 8, high: 24, step: 8}

``grid`` lists the values ``--sampler grid`` tries (by default: a categorical's choices, an int or
float range with ``step``). Each trial trains ``--config`` + overrides + the sampled values into
``OUT/trial-NNN``; after every validated epoch the monitor metric (``train.monitor``, the mean over
the validation splits) is reported to the trial, so with ``--prune`` a MedianPruner stops trials
that are worse than the median of earlier trials at the same epoch. The trial's value is the best
monitor value of its run. The study lives in the storage (SQLite by default): running the command
again with the same ``--storage`` and ``--study`` adds ``--trials`` more trials to it. ``OUT``
(default ``runs/tune/<study>``) receives ``summary.json`` (best trial, parameter importances, every
trial) and ``history.png`` (optimisation history, per-epoch curves, importances).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


from ..errors import CleancutError, ConfigError
from ..metrics import HIGHER_IS_BETTER
from .config import load_config, read_yaml
from .loop import Trainer
from .methods import plugins_for
from .plugin import Plugin

TYPES = ("float", "int", "categorical")


# -- search space ---------------------------------------------------------------------------------

def load_space(path: str | Path) -> dict[str, dict[str, Any]]:
    space = read_yaml(path, "search space", "a YAML mapping: config key -> distribution; see configs/tune-space.yaml")
    return check_space(space, str(path))


def check_space(space: Any, where: str = "search space") -> dict[str, dict[str, Any]]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a non-empty mapping of config keys to distributions")
    out = {}
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ConfigError(f"{where}: {key}: expected {{type: float|int|categorical, ...}}, found {spec!r}")
        spec = dict(spec)
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: {key}: a categorical needs a non-empty list 'choices'")
        else:
            try:
                num = float if spec["type"] == "float" else int
                spec["low"], spec["high"] = num(spec["low"]), num(spec["high"])
                if spec.get("step") is not None:
                    spec["step"] = num(spec["step"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{where}: {key}: a {spec['type']} needs numbers 'low' and 'high'") from None
            if spec["low"] > spec["high"] or (spec.get("log") and spec["low"] <= 0):
                raise ConfigError(f"{where}: {key}: need low <= high (and low > 0 with log: true)")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "grid"}
        if unknown:
            raise ConfigError(f"{where}: {key}: unknown field(s) {', '.join(sorted(unknown))}")
        out[str(key)] = spec
    return out


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {}
    for key, s in space.items():
        if s["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, s["choices"])
        elif s["type"] == "int":
            params[key] = trial.suggest_int(key, s["low"], s["high"], step=s.get("step") or 1, log=bool(s.get("log")))
        else:
            params[key] = trial.suggest_float(key, s["low"], s["high"], step=s.get("step"), log=bool(s.get("log")))
    return params


def grid_values(space: dict[str, dict[str, Any]]) -> dict[str, list]:
    grid = {}
    for key, s in space.items():
        if "grid" in s:
            values = list(s["grid"])
        elif s["type"] == "categorical":
            values = list(s["choices"])
        elif s.get("step"):
            n = int(math.floor((s["high"] - s["low"]) / s["step"] + 1e-9)) + 1
            values = [s["low"] + i * s["step"] for i in range(n)]
            values = [int(v) for v in values] if s["type"] == "int" else [round(v, 12) for v in values]
        else:
            raise ConfigError(f"--sampler grid: {key} is continuous; give its values as grid: [...] (or a step)")
        grid[key] = values
    return grid


def make_sampler(kind: str, space: dict[str, dict[str, Any]], seed: int):
    import optuna

    if kind == "grid":
        return optuna.samplers.GridSampler(grid_values(space), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, len(space) + 1)))
    raise ConfigError(f"--sampler {kind!r}: expected grid, random or tpe")


def make_pruner(prune: bool, startup: int = 2, warmup: int = 1):
    """MedianPruner that never prunes the first ``startup`` completed trials nor epochs
    ``1..warmup`` of a trial (the NopPruner without ``prune``)."""
    import optuna

    if not prune:
        return optuna.pruners.NopPruner()
    # steps are 1-based epochs and Optuna never prunes at step < n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup + 1)


def storage_url(storage: str) -> str:
    """A path becomes ``sqlite:///<absolute path>`` (its folder is created); URLs pass through."""
    if "://" in storage:
        return storage
    p = Path(storage).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


# -- the trials -----------------------------------------------------------------------------------

class OptunaReport(Plugin):
    """Reports the monitor metric of every validated epoch to the trial; stops the run when the
    study's pruner says so (never with the NopPruner used without ``--prune``)."""

    name = "optuna"

    def __init__(self, trial):
        self.trial = trial

    def epoch_end(self, trainer, row: dict) -> None:
        import optuna

        value = trainer.monitor_value(row)
        if value is None:
            return
        self.trial.report(value, trainer.epoch)
        if self.trial.should_prune():
            print(f"trial {self.trial.number} pruned after epoch {trainer.epoch} ({trainer.cfg.train.monitor} {value:.4f})",
                  file=sys.stderr)
            raise optuna.TrialPruned(f"epoch {trainer.epoch}: {trainer.cfg.train.monitor}={value:.4f}")


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: numbers, strings and lists survive the round trip


def run_study(space: dict[str, dict[str, Any]] | str | Path | None, config: str | None, *, trials: int, study_name: str,
              storage: str, sampler: str = "tpe", prune: bool = False, out: str | Path | None = None,
              overrides: list[str] | None = None, seed: int = 0, pruner=None, prune_startup: int = 2,
              prune_warmup: int = 1):
    """Create or load the study, run ``trials`` more trials, write the summary; returns the study."""
    import optuna

    overrides = list(overrides or [])
    url = storage_url(storage)
    existing = None
    try:
        existing = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        pass
    if not out:
        out = existing.user_attrs.get("out") if existing else None
    out = Path(out or Path("runs") / "tune" / study_name)
    if trials > 0:
        if space is None:
            if existing is None or "space" not in existing.user_attrs:
                raise ConfigError("--space is needed to run trials of a new study")
            space = existing.user_attrs["space"]
        space = load_space(space) if isinstance(space, (str, Path)) else check_space(space)
        base = load_config(config, overrides)  # fail now, not in every trial
        for key, value in suggest(optuna.trial.FixedTrial({k: _first(s) for k, s in space.items()}), space).items():
            load_config(config, overrides + [_override(key, value)])  # every key must be a valid config key
        monitor = base.train.monitor
        direction = "maximize" if HIGHER_IS_BETTER.get(monitor, True) else "minimize"
    else:
        if existing is None:
            raise ConfigError(f"study {study_name!r} not found in {url}")
        space, monitor, direction = existing.user_attrs.get("space"), existing.user_attrs.get("monitor"), None
    n_before = len(existing.trials) if existing else 0
    if pruner is None:
        pruner = make_pruner(prune, prune_startup, prune_warmup)
    # a resumed study gets a fresh sampler: offset its seed so random draws do not repeat the first session's
    smp = make_sampler(sampler, space, seed + n_before) if trials > 0 else None
    study = optuna.create_study(storage=url, study_name=study_name, load_if_exists=True, direction=direction,
                                sampler=smp, pruner=pruner)
    if direction is not None and study.direction.name.lower() != direction:
        raise ConfigError(f"study {study_name!r} {study.direction.name.lower()}s; train.monitor={monitor} needs {direction}")
    if trials > 0:
        study.set_user_attr("space", space)
        study.set_user_attr("monitor", monitor)
        study.set_user_attr("config", config)
        study.set_user_attr("overrides", overrides)
        study.set_user_attr("out", str(out))

        def objective(trial) -> float:
            params = suggest(trial, space)
            cfg = load_config(config, overrides + [_override(k, v) for k, v in params.items()])
            run_dir = out / f"trial-{trial.number:03d}"
            trial.set_user_attr("run", str(run_dir))
            print(f"trial {trial.number}: {params} -> {run_dir}", file=sys.stderr)
            trainer = Trainer(cfg, run_dir, plugins=[*plugins_for(cfg), OptunaReport(trial)])
            trainer.fit()
            if trainer.best is None:
                raise ConfigError("the trial has no validation metric: give data.val_splits")
            return float(trainer.best)

        study.optimize(objective, n_trials=trials, catch=(CleancutError,), gc_after_trial=True)
    summary = summarize(study, out)
    return study, summary


def _first(spec: dict[str, Any]):
    return spec["choices"][0] if spec["type"] == "categorical" else spec["low"]


# -- summary --------------------------------------------------------------------------------------

def importances(study) -> tuple[dict[str, float] | None, str | None]:
    """Parameter importances over the completed trials (``optuna.importance``, its default
    PED-ANOVA evaluator), or ``(None, why not)``; the second item also carries Optuna's warnings
    (e.g. too few trials for reliable figures)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return None, f"needs at least 2 completed trials (have {len(done)})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            imp = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:  # e.g. every parameter took one value only
            return None, str(exc).splitlines()[0]
    note = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught})) or None
    return {k: float(v) for k, v in imp.items()}, note


def summarize(study, out: str | Path) -> dict:
    from optuna.trial import TrialState

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                                 TrialState.RUNNING)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        bt = study.best_trial
        best = {"number": bt.number, "value": bt.value, "params": bt.params, "run": bt.user_attrs.get("run")}
    imp, why = importances(study)
    summary = {
        "study": study.study_name, "out": str(out), "direction": study.direction.name.lower(), "monitor": study.user_attrs.get("monitor"),
        "n_trials": len(trials), "states": states, "best": best, "importances": imp, "importances_note": why,
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                    "intermediate": {int(k): v for k, v in sorted(t.intermediate_values.items())},
                    "run": t.user_attrs.get("run"),
                    "minutes": (t.duration.total_seconds() / 60) if t.duration else None} for t in trials],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    plot_study(summary, out / "history.png")
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"study {summary['study']}: {summary['n_trials']} trials "
             f"({', '.join(f'{v} {k.lower()}' for k, v in summary['states'].items() if v)}), "
             f"{summary['direction']} {summary['monitor']}"]
    if summary["best"]:
        b = summary["best"]
        lines.append(f"best: trial {b['number']}, {summary['monitor']} = {b['value']:.4f}, run {b['run']}")
        lines += [f"  {k} = {v}" for k, v in b["params"].items()]
    else:
        lines.append("best: none yet (no completed trial)")
    if summary["importances"]:
        lines.append("parameter importances (PED-ANOVA):" + (f" [{summary['importances_note']}]" if summary["importances_note"] else ""))
        lines += [f"  {k:<28} {v:.3f}" for k, v in summary["importances"].items()]
    else:
        lines.append(f"parameter importances: n/a ({summary['importances_note']})")
    return "\n".join(lines)


def plot_study(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = summary["trials"]
    maximize = summary["direction"] == "maximize"
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t["intermediate"]]
    ax1.plot([t["number"] for t in done], [t["value"] for t in done], "o", label="completed")
    if pruned:
        ax1.plot([t["number"] for t in pruned], [list(t["intermediate"].values())[-1] for t in pruned], "x",
                 color="tab:red", label="pruned (last reported)")
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t["number"]):
        if best is None or (t["value"] > best if maximize else t["value"] < best):
            best = t["value"]
        xs.append(t["number"])
        ys.append(best)
    if xs:
        ax1.step(xs, ys, where="post", color="tab:orange", label="best so far")
    ax1.set(xlabel="trial", ylabel=summary["monitor"] or "objective", title="Optimisation history")
    for t in trials:
        if t["intermediate"]:
            steps = [int(k) for k in t["intermediate"]]
            pruned_t = t["state"] == "PRUNED"
            color = "tab:red" if pruned_t else plt.cm.viridis(t["number"] / max(1, len(trials) - 1) * 0.9)
            ax2.plot(steps, list(t["intermediate"].values()), "--" if pruned_t else "-", marker="x" if pruned_t else "o",
                     markersize=4, alpha=0.6 if pruned_t else 0.9, color=color)
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set(xlabel="epoch", ylabel=summary["monitor"] or "", title="Per-epoch monitor (red dashed: pruned)")
    if summary["importances"]:
        names = list(summary["importances"])[::-1]
        ax3.barh(names, [summary["importances"][n] for n in names])
        ax3.set(xlabel="importance (PED-ANOVA, normalised)", title="Parameter importances")
    else:
        ax3.text(0.5, 0.5, f"importances n/a:\n{summary['importances_note']}", ha="center", va="center", wrap=True)
        ax3.set_axis_off()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if done or pruned:
        ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
