"""Property-based tests (hypothesis) of the options and of ``process()``:

* ``RemoveOptions`` round-trips: value -> text -> value and value -> JSON -> value; command-line
  flags and HTTP parameters (query string, form fields) parse to equal options;
* every combination of option values, sensible or not, either validates or raises
  ``ConfigError``, never anything else;
* ``process()`` on random small images and masks keeps the shape, the dtype and the alpha bounds.

The example counts come from the hypothesis profile (``tests/conftest.py``: ``ci`` by default,
``HYPOTHESIS_PROFILE=thorough`` for a long run).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from cleancut.errors import ConfigError, ImageError  # noqa: E402
from cleancut.cli._options import add_options_to_parser, options_from_namespace  # noqa: E402
from cleancut.options import MODES, RemoveOptions, option_info, options_from_mapping, parse_color  # noqa: E402
from cleancut.pipeline import process  # noqa: E402

INFOS = {i.name: i for i in option_info()}
NULL_WORDS = ("", "none", "null")


# ---------------------------------------------------------------- strategies


def _name_text(comma: bool = True) -> st.SearchStrategy[str]:
    """Text a user could give as a name or path: no NUL, not blank, not a word meaning 'unset'."""
    excluded = "\0" + ("" if comma else ",")
    return (st.text(st.characters(exclude_characters=excluded, exclude_categories=("Cs",)), min_size=1, max_size=16)
            .filter(lambda s: s.strip().lower() not in NULL_WORDS))


def valid_value(name: str) -> st.SearchStrategy:
    """Valid values of one option (not None), in their converted form."""
    info = INFOS[name]
    if info.kind == "choice":
        return st.sampled_from(info.choices)
    if info.kind == "bool":
        return st.booleans()
    if info.kind == "int":
        return st.integers(int(info.minimum or 0), int(info.maximum) if info.maximum is not None else 10**12)
    if info.kind == "float":
        return st.floats(info.minimum, info.maximum, allow_nan=False, allow_infinity=False)
    if info.kind == "color":
        return st.tuples(*[st.integers(0, 255)] * 4)
    if info.kind == "list":
        return st.lists(_name_text(comma=False).map(str.strip).filter(bool), min_size=1, max_size=3).map(tuple)
    return _name_text()  # path, str


@st.composite
def valid_options(draw, scopes=("request", "operator"), with_bg_image: bool = True) -> RemoveOptions:
    """Options that validate: every field drawn from its valid values, the background options
    consistent with the mode."""
    values = {}
    for name, info in INFOS.items():
        if info.scope not in scopes or name in ("mode", "bg_color", "bg_image"):
            continue
        strategy = valid_value(name)
        values[name] = draw(st.one_of(st.none(), strategy) if info.nullable else strategy)
    modes = [m for m in MODES if with_bg_image or m != "image"]
    mode = values["mode"] = draw(st.sampled_from(modes))
    background = draw(st.sampled_from(["none", "color", "image"] if with_bg_image else ["none", "color"]))
    if mode == "image" or (mode == "auto" and background == "image"):
        values["bg_image"] = draw(valid_value("bg_image"))
    elif mode in ("auto", "color") and background == "color":
        values["bg_color"] = draw(valid_value("bg_color"))
    return RemoveOptions(**values)


def wild_value() -> st.SearchStrategy:
    """Anything a caller might pass: numbers of any size, NaN, text, bytes, containers ..."""
    words = st.sampled_from(["true", "no", "none", "null", "nan", "inf", "-inf", "1e400", "-0", "0x10", "1_000",
                             "#fff", "#ff000080", "rgb(1,2,3)", "hsv(0,101%,100%)", "255,0,0", "jpg", "colour",
                             "CPUExecutionProvider", " 5 ", "1.5", "-1", "10**9", "\0", "a,b", ","])
    huge = st.integers(2**1023, 2**20000).flatmap(lambda n: st.sampled_from([n, -n]))  # beyond float's range
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge, st.floats(), st.text(max_size=12),
                        st.binary(max_size=8), words, st.complex_numbers())
    return st.one_of(scalars, st.lists(scalars, max_size=5), st.tuples(scalars, scalars, scalars),
                     st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def as_argv(options: RemoveOptions) -> list[str]:
    """The command line that asks for ``options`` (unset ones left out)."""
    argv = []
    for info in option_info():
        value = getattr(options, info.name)
        if value is None:
            continue
        if info.kind == "bool":
            argv.append(info.flag if value else "--no-" + info.flag[2:])
        else:
            argv.append(f"{info.flag}={info.text(value)}")  # '=': values may start with '-'
    return argv


# ---------------------------------------------------------------- round trips


@given(valid_options())
def test_value_text_value_round_trip(options):
    as_text = {name: info.text(getattr(options, name)) for name, info in INFOS.items()}
    assert all(isinstance(v, str) for v in as_text.values())
    assert options_from_mapping(as_text) == options


@given(valid_options())
def test_value_json_value_round_trip(options):
    assert options_from_mapping(json.loads(json.dumps(options.to_mapping()))) == options
    assert RemoveOptions(**options.to_mapping()) == options


@given(valid_options())
def test_command_line_flags_parse_to_equal_options(options):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options_to_parser(parser)
    assert options_from_namespace(parser.parse_args(as_argv(options))) == options


@given(valid_options(), st.integers(0, 2**32))
def test_replace_validates_like_construction(options, seed):
    rng = np.random.default_rng(seed)
    name = str(rng.choice([n for n in INFOS if n not in ("mode", "bg_color", "bg_image")]))
    value = getattr(RemoveOptions(), name)
    assert options.replace(**{name: value}) == RemoveOptions(**{**options.to_mapping(), name: value})


# ---------------------------------------------------------------- every combination validates or raises ConfigError


@given(st.dictionaries(st.sampled_from(sorted(INFOS)), wild_value(), max_size=8))
def test_any_values_validate_or_raise_config_error(values):
    try:
        options = options_from_mapping(values)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for name, info in INFOS.items():
        value = getattr(options, name)
        if value is None:
            assert info.nullable, name
        elif info.kind in ("int", "float"):
            assert isinstance(value, int if info.kind == "int" else float) and (info.kind == "int" or math.isfinite(value))
            assert (info.minimum is None or value >= info.minimum) and (info.maximum is None or value <= info.maximum)
        elif info.kind == "choice":
            assert value in info.choices
        elif info.kind == "bool":
            assert isinstance(value, bool)
        elif info.kind == "color":
            assert len(value) == 4 and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    assert options.resolved_mode in MODES[1:]
    assert options_from_mapping(options.to_mapping()) == options


@given(st.dictionaries(st.one_of(st.text(max_size=20), st.integers(), st.none()), wild_value(), min_size=1, max_size=3))
def test_unknown_names_raise_config_error(values):
    assume(any(name not in INFOS for name in values))
    with pytest.raises(ConfigError, match="unknown option"):
        options_from_mapping(values)


@given(st.one_of(st.text(max_size=30), wild_value()))
def test_colours_parse_to_rgba_or_raise_config_error(value):
    try:
        rgba = parse_color(value)
    except ConfigError:
        return
    assert len(rgba) == 4 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgba)


def test_found_by_fuzzing():
    """Cases the fuzz targets found (fuzz/regressions/options), as plain assertions."""
    with pytest.raises(ConfigError, match="colour name"):
        parse_color("hsv(0,101%,100%)")  # Pillow gives (255, -2, -2)
    with pytest.raises(ConfigError, match="integer too long to print"):
        parse_color([10**5000, 0, 0])  # found by hypothesis: the message's repr() raised ValueError
    with pytest.raises(ConfigError, match="comma-separated list"):
        RemoveOptions(providers=["CP,ExecutionProvider"])  # would read back as two providers
    with pytest.raises(ConfigError, match="a file path"):
        RemoveOptions(bg_image="bg\0.png")
    with pytest.raises(ImageError, match="NUL"):
        from cleancut.io import load_image

        load_image("photo\0.png")


# ---------------------------------------------------------------- HTTP parameters


@pytest.fixture(scope="module")
def server(tiny_model):
    """The app with a recorder of the options each request was given."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cleancut.server import ServerSettings, create_app

    app = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))
    state = app.state.cleancut
    seen: list[RemoveOptions] = []
    run = state.run

    def recording(job):
        seen.append(job.options)
        return run(job)

    state.run = recording
    with TestClient(app) as client:
        yield client, seen, state


def _png(size=(24, 16), color=(255, 255, 255)) -> bytes:
    from cleancut.testing import square_image

    buf = io.BytesIO()
    square_image(size).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:crop. no subject was found")
@given(valid_options(scopes=("request",)), st.sampled_from(["query", "form", "query+raw body"]))
def test_http_parameters_parse_to_equal_options(server, options, via):
    client, seen, state = server
    values = {name: INFOS[name].text(getattr(options, name)) for name in INFOS
              if INFOS[name].scope == "request" and name != "bg_image"}
    files = {"file": ("photo.png", _png(), "image/png")}
    if options.bg_image is not None:
        files["bg_image"] = ("bg.png", _png((8, 8)), "image/png")
    seen.clear()
    if via == "query":
        r = client.post("/api/remove", params=values, files=files)
    elif via == "form":
        r = client.post("/api/remove", data=values, files=files)
    else:
        assume(options.bg_image is None)  # a raw body carries one image only
        r = client.post("/api/remove", params=values, content=files["file"][1])
    assert r.status_code == 200, r.text
    (got,) = seen
    expected = options.replace(max_pixels=state.base.max_pixels)
    if options.bg_image is not None:  # the upload reaches the options as a decoded picture, not a path
        assert isinstance(got.bg_image, Image.Image) and got.bg_image.size == (8, 8)
        got, expected = got.to_mapping(), expected.to_mapping()
        got.pop("bg_image"), expected.pop("bg_image")
    assert got == expected
    assert r.headers["x-cleancut-mode"] == options.resolved_mode


# ---------------------------------------------------------------- process()


@pytest.fixture(scope="module")
def background_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bg") / "bg.png"
    Image.new("RGB", (10, 7), (0, 180, 40)).save(path)
    return str(path)


@st.composite
def photos(draw):
    """A small RGB or RGBA photo and a float32 alpha in [0, 1] of its size."""
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = draw(st.sampled_from([3, 4]))
    pixels = draw(hnp.arrays(np.uint8, (height, width, channels)))
    alpha = draw(hnp.arrays(np.float32, (height, width), elements=st.floats(0, 1, width=32)))
    return Image.fromarray(pixels, "RGB" if channels == 3 else "RGBA"), alpha


OUTPUT_MODES = {"cutout": ("RGBA",), "mask": ("L",), "color": ("RGB", "RGBA"), "image": ("RGB",), "blur": ("RGB",)}


@given(photos(), valid_options(scopes=("request",)))
def test_process_keeps_shape_dtype_and_alpha_bounds(background_path, photo, options):
    image, alpha = photo
    if options.bg_image is not None:
        options = options.replace(bg_image=background_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "crop: no subject was found"
        out = process(image, alpha, options)
    mode = options.resolved_mode
    assert out.mode in OUTPUT_MODES[mode]
    if mode == "color":  # translucent colours give a translucent card
        assert out.mode == ("RGB" if (options.bg_color or (255, 255, 255, 255))[3] == 255 else "RGBA")
    pixels = np.asarray(out)
    assert pixels.dtype == np.uint8
    assert pixels.shape[2:] == {"L": (), "RGB": (3,), "RGBA": (4,)}[out.mode]
    width, height = image.size
    if options.crop:
        assert 1 <= out.width <= width and 1 <= out.height <= height
    else:
        assert out.size == (width, height)
    if out.mode in ("RGBA", "L") and mode in ("cutout", "mask"):
        out_alpha = pixels[..., 3] if out.mode == "RGBA" else pixels
        if image.mode == "RGBA" and not options.crop:  # never more opaque than the photo itself
            assert (out_alpha.astype(int) <= np.asarray(image.getchannel("A"), int) + 1).all()
        plain = (not options.alpha_matting and options.threshold is None and options.feather == 0
                 and options.remove_islands == 0 and options.fill_holes == 0 and not options.crop)
        if plain:  # no post-processing: the output alpha is the given one
            expected = alpha * (np.asarray(image.getchannel("A"), np.float32) / 255 if image.mode == "RGBA" else 1)
            assert np.abs(out_alpha.astype(int) - np.rint(expected * 255).astype(int)).max() <= 1
        if options.threshold is not None and options.feather == 0 and image.mode == "RGB":
            assert set(np.unique(out_alpha)) <= {0, 255}


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 40)),
                  elements=st.floats(-0.5, 1.5, width=32)),
       st.floats(0.05, 1.0, exclude_max=True))  # 1: no sharpening, the alpha is handed back as it is
def test_sharpened_alpha_follows_the_exact_curve(alpha, temperature):
    from cleancut.preprocess import finish_alpha, sharpen_alpha

    fast = finish_alpha(alpha, (alpha.shape[1], alpha.shape[0]), temperature)  # the table, no resize
    exact = sharpen_alpha(np.clip(alpha, 0.0, 1.0), temperature)
    assert fast.shape == alpha.shape and fast.dtype == np.float32
    assert np.abs(fast - exact).max() <= 1.0 / (65535 * temperature) + 1e-6
    assert ((0.0 <= fast) & (fast <= 1.0)).all()
    order = np.argsort(alpha, axis=None, kind="stable")  # the ordering of the probabilities is kept
    assert (np.diff(fast.ravel()[order]) >= 0).all()
    assert not np.shares_memory(alpha, fast)  # the input is left alone


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.floats(0, 1, width=32)),
       st.tuples(st.integers(1, 70), st.integers(1, 70)), st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_finished_alpha_is_the_resized_then_sharpened_alpha(alpha, size, temperature):
    from cleancut.preprocess import finish_alpha, resize_alpha, sharpen_alpha

    out = finish_alpha(alpha, size, temperature)
    assert out.shape == (size[1], size[0]) and out.dtype == np.float32
    expected = sharpen_alpha(resize_alpha(alpha, size), temperature)
    # 16-bit levels before and after the resize: a level and a rounding of the resize at most,
    # times the sharpening's steepest slope (1 / temperature)
    assert np.abs(out - expected).max() <= 2.5 / (65535 * temperature) + 1e-6


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.just(3))),
       st.data(), st.tuples(*[st.integers(0, 255)] * 3))
def test_composites_are_the_float_blend_within_one_level(foreground, data, colour):
    from cleancut import compose

    h, w = foreground.shape[:2]
    alpha = data.draw(hnp.arrays(np.float32, (h, w), elements=st.floats(0, 1, width=32)))
    picture = data.draw(hnp.arrays(np.uint8, (h, w, 3)))
    a = alpha[:, :, None].astype(np.float64)
    for out, background in ((compose.over_color(foreground, alpha, colour), np.asarray(colour, np.float64)),
                            (compose.over_image(foreground, alpha, Image.fromarray(picture)), picture)):
        assert out.mode == "RGB" and out.size == (w, h)
        expected = foreground * a + background * (1.0 - a)
        assert np.abs(np.asarray(out, np.float64) - expected).max() <= 1.0
