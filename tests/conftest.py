"""Shared fixtures: a tiny ONNX model (see cleancut.testing) and synthetic images.

* ``tiny_model``    path of the tiny .onnx (its .json spec beside it), built once per session;
* ``tiny_registry`` registers the tiny model as ``cleancut-default`` (plus ``tiny-gray``) by
                    pointing the bundled-model folder at a temporary one, so code that uses the
                    default model works without the real one;
* ``remover``       a session-wide ``cleancut.Remover`` on the tiny model;
* ``square``        a factory for white-rectangle-on-black test images;
* ``tool``          loads a script of ``tools/`` as a module: ``tool("ship_model").main([...])``.

Hypothesis profiles: ``ci`` (the default: 60 examples per property, no deadline) and
``thorough`` (``HYPOTHESIS_PROFILE=thorough``: 2,000 examples).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cleancut.testing import square_image, write_tiny_model  # noqa: E402

try:  # property-based tests (tests/test_properties.py): few examples in CI, many on request
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass
else:
    _fixtures = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_fixtures,
                              print_blob=True)
    settings.register_profile("thorough", max_examples=2000, deadline=None, suppress_health_check=_fixtures)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), name="tiny", input_size=(32, 32))


@pytest.fixture(scope="session")
def _registry_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry")
    write_tiny_model(folder, name="cleancut-default", input_size=(32, 32))
    write_tiny_model(folder, name="tiny-gray", input_size=(24, 24), channels=1, edge_refiner=False)
    return folder


@pytest.fixture
def tiny_registry(_registry_folder, tmp_path_factory, monkeypatch) -> Path:
    """The bundled-model folder, replaced by a fresh copy of the tiny registry for each test
    (a test may add specs to it; the next test must not see them)."""
    import shutil

    from cleancut import models

    folder = tmp_path_factory.mktemp("registry-copy")
    shutil.copytree(_registry_folder, folder, dirs_exist_ok=True)
    monkeypatch.setattr(models, "BUNDLED_DIR", folder)
    return folder


@pytest.fixture(scope="session")
def remover(tiny_model):
    from cleancut import Remover

    return Remover(model=tiny_model)


@pytest.fixture
def square():
    return square_image


@pytest.fixture
def tool():
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
