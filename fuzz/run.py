"""Run one fuzz target with atheris (libFuzzer for Python), or replay inputs through it.

    python fuzz/run.py decode --seconds 1800               # fuzz for 30 minutes
    python fuzz/run.py upload --seconds 60 --workdir /tmp/f # a short run in a scratch folder
    python fuzz/run.py options --replay crash-1234 ...      # re-run saved inputs, no fuzzing

Targets (``fuzz/target_<name>.py``): ``decode`` (``cleancut.io.load_image`` on arbitrary bytes,
every format Pillow opens), ``upload`` (the server's ``POST /api/remove`` through its ASGI app:
body, multipart, query and headers), ``options`` (``RemoveOptions`` from strings, JSON values
and command lines).

Every input must keep three properties, or the run stops and libFuzzer saves the input under
``WORKDIR/artifacts/``:

* no exception but the ones the target allows (``cleancut.errors`` types, and for the server a
  JSON error response that is never a 500) and no broken invariant of the result;
* no input runs longer than 10 s (libFuzzer ``-timeout=10``);
* no input makes the process's peak resident memory grow by more than the target's budget, which
  is derived from the pixel cap the target sets (checked per input by resetting the kernel's
  high-water mark through ``/proc/self/clear_refs``), and the whole process stays under
  ``-rss_limit_mb``.

The work folder (default ``fuzz/work/<target>``, ignored by git) holds ``seeds/`` (regenerated at
every start from ``fuzz/corpus.py`` and the target), ``corpus/`` (what libFuzzer found, kept
between runs) and ``artifacts/``. Saved crashers are kept in ``fuzz/regressions/<target>/`` and
replayed by the test suite. Extra arguments after ``--`` go to libFuzzer unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("decode", "upload", "options")
HANG_SECONDS = 10
RSS_LIMIT_MB = 2048


def load_target(name: str):
    """The module ``fuzz/target_<name>.py``."""
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; expected one of {', '.join(TARGETS)}")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(f"target_{name}")


def regressions(name: str) -> list[Path]:
    """The saved inputs of a target that once broke a property (replayed by the test suite)."""
    folder = HERE / "regressions" / name
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


class MemoryBudgetExceeded(AssertionError):
    """One input made the process's peak resident memory grow by more than the budget."""


class PeakMemory:
    """Peak resident memory growth over one call, from /proc/self/status (Linux).

    ``clear_refs`` 5 resets the high-water mark VmHWM to the current VmRSS, so VmHWM after the
    call minus VmRSS before it is what the call itself needed at its peak."""

    def __init__(self) -> None:
        self.enabled = Path("/proc/self/clear_refs").exists()
        if self.enabled:
            try:
                self._reset()
            except OSError:
                self.enabled = False

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    @staticmethod
    def _status_kib(*keys: str) -> list[int]:
        values = dict.fromkeys(keys, 0)
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
        return [values[k] for k in keys]

    def measure(self, func, *args) -> int:
        """Run ``func(*args)``; return its peak memory growth in bytes (0 where unmeasurable)."""
        if not self.enabled:
            func(*args)
            return 0
        self._reset()
        (before,) = self._status_kib("VmRSS")
        func(*args)
        (peak,) = self._status_kib("VmHWM")
        return max(0, peak - before) * 1024


def guarded(target):
    """The target's ``check`` with the per-input memory budget enforced."""
    memory = PeakMemory()
    budget = target.MEMORY_BUDGET

    def one_input(data: bytes) -> None:
        grown = memory.measure(target.check, data)
        if grown > budget:
            raise MemoryBudgetExceeded(
                f"{target.NAME}: this input made the peak memory grow by {grown / 2**20:.0f} MiB, over the "
                f"budget of {budget / 2**20:.0f} MiB")

    return one_input


def write_seeds(target, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    seeds = target.seeds()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return len(seeds)


def replay(target, paths: list[Path]) -> int:
    """Run saved inputs through the target; report each one's outcome."""
    one_input = guarded(target)
    failed = 0
    for path in paths:
        started = time.perf_counter()
        try:
            one_input(path.read_bytes())
            outcome = "ok"
        except Exception as exc:  # report every failure and go on with the next input
            failed += 1
            outcome = f"FAILED: {type(exc).__name__}: {exc}"
        print(f"{path}: {outcome} ({time.perf_counter() - started:.2f}s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default: 60)")
    parser.add_argument("--workdir", type=Path, help="work folder (default: fuzz/work/TARGET)")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs and exit")
    parser.add_argument("--no-instrument", action="store_true",
                        help="no coverage instrumentation of the Python code (faster, blind fuzzing)")
    args = parser.parse_args(argv)
    target = load_target(args.target)

    if args.replay:
        target.prepare()
        return replay(target, args.replay)

    import atheris

    if not args.no_instrument:
        for hook in target.HOOKS:  # comparison hooks ("str", "RegEx") that guide the mutations
            atheris.enabled_hooks.add(hook)
        with atheris.instrument_imports(include=list(target.INSTRUMENT)):
            target.prepare()
    else:
        target.prepare()
    workdir = args.workdir or HERE / "work" / args.target
    seeds, corpus, artifacts = workdir / "seeds", workdir / "corpus", workdir / "artifacts"
    count = write_seeds(target, seeds)
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    saved = HERE / "regressions" / args.target
    print(f"fuzz target {args.target}: {count} seeds, {len(regressions(args.target))} saved regressions, "
          f"{args.seconds} s, work folder {workdir}", file=sys.stderr, flush=True)
    libfuzzer = [sys.argv[0], f"-max_total_time={args.seconds}", f"-timeout={HANG_SECONDS}",
                 f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={target.MAX_LEN}",
                 f"-artifact_prefix={artifacts}{os.sep}", "-print_final_stats=1", *extra,
                 str(corpus), str(seeds)]
    if saved.is_dir():
        libfuzzer.append(str(saved))
    atheris.Setup(libfuzzer, guarded(target))
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


if __name__ == "__main__":
    raise SystemExit(main())
