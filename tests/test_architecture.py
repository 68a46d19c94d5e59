"""The import graph of ``src/cleancut``, read with grimp (every import statement, the lazy ones
inside functions included; only ``if TYPE_CHECKING:`` imports are left out, as they never run):

* no import cycle anywhere in the package;
* the core (api, options, pipeline, io, runtime, models, refine, compose, preprocess) never
  imports a front end or a capability room (cli, server, video, batch, train), directly or
  through another module;
* inference (the core) never reaches torch.

The checks are also run on small packages written here with a deliberate cycle and a deliberate
layer break, so they are seen to fail when they should.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

CORE = ["api", "options", "pipeline", "io", "runtime", "models", "refine", "compose", "preprocess", "edges"]
ROOMS = ["cli", "server", "video", "batch", "train"]


def import_graph(package: str):
    return grimp.build_graph(package, include_external_packages=True, exclude_type_checking_imports=True)


def cycles(graph, package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted; none means no cycle.
    A module importing its own package's ``__init__`` and back counts too."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(d for d in graph.find_modules_directly_imported_by(m)
                       if d == package or d.startswith(package + ".")) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursive: the package has a few hundred modules at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in modules:
        if m not in index:
            visit(m)
    return sorted(found)


def forbidden_chains(graph, package: str, importers: list[str], imported: list[str]) -> list[tuple[str, ...]]:
    """One import chain per (importer, imported) pair that exists, for each pair that should not."""
    chains = []
    for a in importers:
        for b in imported:
            importer = f"{package}.{a}"
            target = b if "." in b or b == "torch" else f"{package}.{b}"
            if importer not in graph.modules or target not in graph.modules:
                continue
            chain = graph.find_shortest_chains(importer=importer, imported=target, as_packages=True)
            chains += sorted(chain)
    return chains


@pytest.fixture(scope="module")
def graph():
    return import_graph("cleancut")


def test_no_import_cycle(graph):
    assert cycles(graph, "cleancut") == []


def test_the_core_never_imports_a_front_end_or_a_room(graph):
    assert forbidden_chains(graph, "cleancut", CORE, ROOMS) == []


def test_inference_never_imports_torch(graph):
    assert "torch" in graph.modules  # training does import it: the graph sees external packages
    assert forbidden_chains(graph, "cleancut", CORE, ["torch"]) == []


# -- the checks fail when they should ----------------------------------------------------------------


def _package(root: Path, name: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def sample_package(tmp_path, monkeypatch):
    def make(name: str, files: dict[str, str]):
        _package(tmp_path, name, {"__init__.py": "", **files})
        monkeypatch.syspath_prepend(str(tmp_path))
        yield_graph = import_graph(name)
        return yield_graph

    yield make
    for mod in [m for m in sys.modules if m.startswith("ccsample")]:
        del sys.modules[mod]


def test_a_lazy_import_cycle_is_found(sample_package):
    graph = sample_package("ccsample_cycle", {
        "api.py": "def f():\n    from .explain import g\n    return g\n",
        "explain.py": "def g():\n    from . import api  # lazy, inside a function\n    return api\n",
        "leaf.py": "from .api import f\n",
    })
    assert cycles(graph, "ccsample_cycle") == [["ccsample_cycle.api", "ccsample_cycle.explain"]]


def test_a_type_checking_import_is_not_a_cycle(sample_package):
    graph = sample_package("ccsample_typing", {
        "pipeline.py": "from .options import O\n",
        "options.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .pipeline import P\nO = 1\n",
    })
    assert cycles(graph, "ccsample_typing") == []


def test_a_core_module_reaching_a_room_or_torch_is_found(sample_package):
    graph = sample_package("ccsample_layers", {
        "runtime.py": "def run():\n    from .helpers import h\n    return h\n",
        "helpers.py": "def h():\n    from .server import app\n    import torch\n    return app, torch\n",
        "server/__init__.py": "app = 1\n",
    })
    assert forbidden_chains(graph, "ccsample_layers", ["runtime"], ["server"]) == [
        ("ccsample_layers.runtime", "ccsample_layers.helpers", "ccsample_layers.server")]
    assert forbidden_chains(graph, "ccsample_layers", ["runtime"], ["torch"]) == [
        ("ccsample_layers.runtime", "ccsample_layers.helpers", "torch")]
