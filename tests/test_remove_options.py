"""RemoveOptions: the single definition of every option, its validation, and what is generated
from it (argparse flags, the README table)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from cleancut.errors import ConfigError
from cleancut.cli._options import add_options_to_parser, options_from_namespace
from cleancut.options import RemoveOptions, option_info, options_from_mapping, options_markdown, parse_color


def test_every_field_has_complete_metadata():
    infos = option_info()
    assert [i.name for i in infos] == [f.name for f in fields(RemoveOptions)]
    for info in infos:
        assert info.help and info.kind and info.group and info.scope in ("request", "operator")
        assert info.flag == "--" + info.name.replace("_", "-")
        assert (info.choices is not None) == (info.kind == "choice")
    operator = {i.name for i in infos if i.scope == "operator"}
    assert operator == {"model", "providers", "threads", "max_pixels"}


def test_defaults():
    o = RemoveOptions()
    assert (o.mode, o.resolved_mode, o.format, o.threshold, o.crop) == ("auto", "cutout", "png", None, False)
    assert o.foreground_estimation is True and o.edges == "auto"  # colours re-estimated by default
    assert RemoveOptions(estimate_foreground=False).foreground_estimation is False
    assert RemoveOptions(mode="mask").foreground_estimation is False
    assert RemoveOptions(alpha_matting=True).foreground_estimation is True
    assert RemoveOptions(alpha_matting=True, estimate_foreground=False).foreground_estimation is False
    assert RemoveOptions(alpha_matting=True, mode="mask").foreground_estimation is False


def test_strings_are_converted_like_form_fields():
    o = options_from_mapping({"mode": "MASK", "format": "jpg", "threshold": "0.5", "crop": "true",
                              "crop_margin": "4", "providers": "CPUExecutionProvider, X", "threads": "2"})
    assert (o.mode, o.format, o.threshold, o.crop, o.crop_margin) == ("mask", "jpeg", 0.5, True, 4)
    assert o.providers == ("CPUExecutionProvider", "X") and o.threads == 2
    assert options_from_mapping({"threshold": "none", "estimate_foreground": ""}).threshold is None


@pytest.mark.parametrize("value, expected", [
    ("white", (255, 255, 255, 255)), ("#ff000080", (255, 0, 0, 128)), ("0,128,255", (0, 128, 255, 255)),
    ("1, 2, 3, 4", (1, 2, 3, 4)), ((9, 8, 7), (9, 8, 7, 255)), ("rgb(1,2,3)", (1, 2, 3, 255)),
])
def test_colours(value, expected):
    assert parse_color(value) == expected
    assert RemoveOptions(bg_color=value).bg_color == expected


def test_auto_mode_follows_the_background():
    assert RemoveOptions(bg_color="red").resolved_mode == "color"
    assert RemoveOptions(bg_image="bg.jpg").resolved_mode == "image"
    assert RemoveOptions(mode="color").resolved_mode == "color"
    # replacing keeps an explicit mode; auto re-resolves
    assert RemoveOptions(bg_color="red").replace(bg_color=None).resolved_mode == "cutout"


@pytest.mark.parametrize("values, message", [
    ({"mode": "sketch"}, r"'mode' \(--mode\): expected one of auto, cutout, mask, color, image, blur, got 'sketch'"),
    ({"threshold": 1.5}, r"'threshold' \(--threshold\): expected a number between 0 and 1, got 1.5"),
    ({"threshold": "abc"}, "expected a number between 0 and 1"),
    ({"crop_margin": 2.5}, "expected an integer >= 0, got 2.5"),
    ({"crop_margin": -1}, "expected an integer >= 0"),
    ({"quality": 0}, "expected an integer between 1 and 100"),
    ({"quality": "9" * 5000}, "expected an integer between 1 and 100"),  # over int()'s 4,300 digits
    ({"bg_color": "1,2," + "3" * 5000}, "values 0-255"),
    ({"crop": "maybe"}, "expected true or false, got 'maybe'"),
    ({"feather": float("nan")}, "feather"),
    ({"bg_color": "not-a-colour"}, r"'bg_color' \(--bg-color\): expected a colour name"),
    ({"bg_color": "1,2,300"}, "values 0-255"),
    ({"mode": None}, "'mode'"),
    ({"matting_erode": 0}, "expected an integer between 1 and 1000"),
    ({"bg_color": "red", "bg_image": "x.png"}, "bg_color and bg_image were both given"),
    ({"bg_color": "red", "mode": "mask"}, "bg_color is only used by mode 'color', but mode is 'mask'"),
    ({"bg_image": "x.png", "mode": "blur"}, "bg_image is only used by mode 'image'"),
    ({"mode": "image"}, "mode 'image' needs a background picture; pass --bg-image"),
])
def test_invalid_values_raise_config_error_with_a_clear_message(values, message):
    with pytest.raises(ConfigError, match=message):
        options_from_mapping(values)


def test_unknown_option_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown option 'treshold' \(did you mean 'threshold'\?\); valid options are: .*alpha_matting"):
        options_from_mapping({"treshold": 0.5})
    with pytest.raises(ConfigError, match="unknown option"):
        RemoveOptions().replace(colour="red")


def test_options_are_frozen_and_replace_validates():
    o = RemoveOptions()
    with pytest.raises(AttributeError):
        o.mode = "mask"  # type: ignore[misc]
    with pytest.raises(ConfigError):
        o.replace(threshold=2)


def test_mapping_round_trip():
    o = RemoveOptions(mode="color", bg_color="#102030", threshold=0.3, providers="A,B", crop=True)
    again = options_from_mapping(o.to_mapping())
    assert again == o
    assert o.to_mapping()["bg_color"] == "#102030ff" and o.to_mapping()["providers"] == "A,B"
    assert set(o.to_mapping(scope="operator")) == {"model", "providers", "threads", "max_pixels"}


def _parser(**kwargs):
    parser = argparse.ArgumentParser()
    add_options_to_parser(parser, **kwargs)
    return parser


def test_parser_is_generated_from_the_options():
    parser = _parser()
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags == {i.flag for i in option_info()}
    ns = parser.parse_args([])
    assert vars(ns) == {}  # nothing typed -> nothing in the namespace -> dataclass defaults
    assert options_from_namespace(ns) == RemoveOptions()


def test_parsed_flags_become_options():
    ns = _parser().parse_args(["--mode", "color", "--bg-color", "0,0,255", "--crop", "--threshold", "0.4",
                               "--no-estimate-foreground", "--alpha-matting", "--providers", "CPUExecutionProvider"])
    o = options_from_namespace(ns)
    assert (o.mode, o.bg_color, o.crop, o.threshold) == ("color", (0, 0, 255, 255), True, 0.4)
    assert o.alpha_matting and o.estimate_foreground is False and o.providers == ("CPUExecutionProvider",)
    with pytest.raises(ConfigError, match="'threshold'"):
        options_from_namespace(_parser().parse_args(["--threshold", "7"]))


def test_parser_can_leave_out_operator_options():
    parser = _parser(scopes=("request",))
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings}
    assert "--model" not in flags and "--mode" in flags


def test_markdown_table_lists_every_option():
    table = options_markdown()
    for info in option_info():
        assert f"| `{info.name}` | `{info.flag}` |" in table
    assert table.count("\n") == len(option_info()) + 1


def test_python_types_for_servers():
    types = {i.name: i.python_type for i in option_info()}
    assert types["crop"] is bool and types["quality"] is int and types["threshold"] is float
    assert types["bg_color"] is str and types["mode"] is str
