"""Every registered architecture: builds, trains a step, exports to ONNX with parity, evaluates."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cleancut import datasets  # noqa: E402
from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.errors import ModelError  # noqa: E402
from cleancut.evaluate import OnnxModel, evaluate  # noqa: E402
from cleancut.models import get_model  # noqa: E402
from cleancut.train import archs  # noqa: E402
from cleancut.train.checkpoint import atomic_save  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.export import export_onnx  # noqa: E402
from cleancut.train.predict import TorchModel, spec_for  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

TINY_KWARGS = {
    "cnn": {"width": 4, "blocks": 2, "fc": 8},
    "unet": {"width": 4, "depth": 2},
    "cutnet": {"width": 0.5, "decoder": 8},
    "litefpn": {"decoder": 8},  # the encoder is EfficientNet-Lite0 at its real size
}


# pyramid pooling: at 160 px its input is 5x5, which 2 and 4 bins do not divide (overlapping windows)
SIZE = {"cutnet": 160, "litefpn": 160}


@pytest.mark.parametrize("h, w, bins", [(10, 10, 4), (5, 5, 2), (12, 7, 3), (8, 8, 4), (3, 11, 6)])
def test_exported_pyramid_pool_is_adaptive_average_pooling(h, w, bins):
    from cleancut.train.archs._blocks import adaptive_avg_matmul

    x = torch.randn(2, 3, h, w)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
    assert torch.allclose(adaptive_avg_matmul(x, bins, h, w), expected, atol=1e-6)


def _checkpoint(tmp_path, arch: str, grayscale: bool = False):
    size = SIZE.get(arch, 64)
    cfg = load_config(None, [f"model.arch={arch}", f"data.size={size}", f"data.grayscale={str(grayscale).lower()}"])
    cfg.model.kwargs = TINY_KWARGS.get(arch, {})
    torch.manual_seed(0)
    model = archs.build(arch, in_channels=1 if grayscale else 3, **cfg.model.kwargs)
    # one optimiser step so BatchNorm statistics and weights are not at their initial values
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    out = model(torch.randn(2, 1 if grayscale else 3, size, size))
    loss = sum(o.mean() for o in out) if isinstance(out, list) else out.mean()
    loss.backward()
    opt.step()
    path = tmp_path / f"{arch}.pt"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, path)
    return path, model.eval(), cfg


@pytest.mark.parametrize("arch", archs.available())
def test_every_architecture_exports_with_parity(tmp_path, arch):
    assert arch in TINY_KWARGS, f"add tiny kwargs for new architecture {arch!r} to this test"
    ckpt, model, cfg = _checkpoint(tmp_path, arch)
    report = export_onnx(ckpt, tmp_path / f"{arch}.onnx", name=f"tiny-{arch}")
    assert report["max_abs_diff"] < 1e-4
    spec = get_model(tmp_path / f"{arch}.onnx")
    size = SIZE.get(arch, 64)
    assert spec.name == f"tiny-{arch}" and spec.input_size == (size, size) and spec.architecture == arch
    spec.verify()  # sha256 recorded and matching
    x = np.random.default_rng(0).standard_normal((3, 3, size, size)).astype(np.float32)
    onnx_probs = OnnxModel(spec).predict_batch(x)
    torch_probs = TorchModel(model, spec_for(cfg)).predict_batch(x)
    assert onnx_probs.shape == (3, size, size)
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    assert 0 <= onnx_probs.min() and onnx_probs.max() <= 1


def test_litefpn_detail_branch_draws_at_the_input_resolution_and_exports_with_parity(tmp_path):
    """The detail branch: the main output at stride 1 (the stride-2 head kept for deep
    supervision); the export and the runtime agree with torch at a size not a square."""
    cfg = load_config(None, ["model.arch=litefpn", "data.size=160", "model.kwargs={decoder: 8, detail: 8}"])
    torch.manual_seed(0)
    model = archs.build("litefpn", **cfg.model.kwargs)
    plain = archs.build("litefpn", decoder=8)
    x = torch.randn(2, 3, 160, 192)
    outs = model.train()(x)
    assert [tuple(o.shape[-2:]) for o in outs[:2]] == [(160, 192), (80, 96)]
    assert len(outs) == len(plain.train()(x)) + 1
    path = tmp_path / "detail.pt"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, path)
    report = export_onnx(path, tmp_path / "detail.onnx", keep_aspect=True)
    assert report["max_abs_diff"] < 1e-4
    probs = OnnxModel(get_model(tmp_path / "detail.onnx")).predict_batch(
        np.random.default_rng(1).standard_normal((1, 3, 160, 192)).astype(np.float32))
    assert probs.shape == (1, 160, 192)


def test_grayscale_model_exports_one_channel(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "unet", grayscale=True)
    export_onnx(ckpt, tmp_path / "g.onnx")
    spec = get_model(tmp_path / "g.onnx")
    assert spec.channels == 1 and len(spec.mean) == 1


def test_temperature_sharpens_in_the_graph_and_keeps_the_order(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    export_onnx(ckpt, tmp_path / "plain.onnx")
    export_onnx(ckpt, tmp_path / "sharp.onnx", temperature=0.25)
    spec = get_model(tmp_path / "sharp.onnx")
    assert spec.extra["output_temperature"] == 0.25 and "output_temperature" not in get_model(tmp_path / "plain.onnx").extra
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    p = OnnxModel(get_model(tmp_path / "plain.onnx")).predict_batch(x).astype(np.float64)
    q = OnnxModel(spec).predict_batch(x).astype(np.float64)
    inner = (p > 1e-3) & (p < 1 - 1e-3)
    assert inner.sum() > 100
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    np.testing.assert_allclose(logit(q[inner]), 4 * logit(p[inner]), atol=2e-2)
    assert np.abs(q - 0.5).mean() > np.abs(p - 0.5).mean()  # crisper
    order = np.argsort(p.ravel(), kind="stable")
    assert np.all(np.diff(q.ravel()[order]) >= -1e-6)  # the same ranking: no pixel overtakes another
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ModelError, match="temperature must be a positive number"):
            export_onnx(ckpt, tmp_path / "bad.onnx", temperature=bad)


def test_output_levels_benchmark_scores_temperatures_as_the_graph_applies_them(tmp_path, capsys):
    bench = _bench("output_levels")
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    export_onnx(ckpt, tmp_path / "plain.onnx")
    export_onnx(ckpt, tmp_path / "sharp.onnx", temperature=0.25)
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    p = OnnxModel(get_model(tmp_path / "plain.onnx")).predict_batch(x)
    q = OnnxModel(get_model(tmp_path / "sharp.onnx")).predict_batch(x)
    assert np.abs(bench.calibrate(p, 0.0, 1.0, 0.25) - q).max() < 2e-3
    root = make_shapes_dataset(tmp_path / "d", n=12, size=48)
    assert bench.main([str(tmp_path / "plain.onnx"), "--data", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "| temperature 0.25 |" in out and "| levels 0.35 0.65 |" in out and "| alpha temperature 0.25 |" in out
    assert "chosen: --" in out and "maxF within 0.0025 of raw" in out


def test_alpha_temperature_is_exported_scored_and_refused_when_out_of_range(tmp_path, capsys):
    bench = _bench("output_levels")
    root = make_shapes_dataset(tmp_path / "d", n=12, size=48)
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "plain.onnx")]) == 0
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "sharp.onnx"), "--alpha-temperature", "0.25"]) == 0
    spec = get_model(tmp_path / "sharp.onnx")
    assert spec.alpha_temperature == 0.25 and get_model(tmp_path / "plain.onnx").alpha_temperature == 1.0
    # the graphs are the same network: the sharpening is the runtime's, after the resize
    pairs = datasets.select([str(root)], ["train"])["train"]
    plain, sharp = (evaluate(OnnxModel(get_model(tmp_path / f"{n}.onnx")), pairs).results() for n in ("plain", "sharp"))
    assert sharp["MAE"] != plain["MAE"]
    # cleancut evaluate scores what output_levels.py scores for that candidate
    preds = bench.raw_predictions(str(tmp_path / "plain.onnx"), pairs, None)
    expected = bench.score(preds, 0.0, 1.0, 1.0, 0.25)
    for key in ("MAE", "maxF", "wF"):
        assert abs(sharp[key] - expected[key]) < 1e-6, key
    capsys.readouterr()
    for bad in ("0", "0.01", "1.5"):
        assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "bad.onnx"), "--alpha-temperature", bad]) != 0
        assert "--alpha-temperature must be from 0.05 to 1" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()


def _bench(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec_ = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def test_int8_network_only_keeps_the_output_float(tmp_path):
    import onnx

    from cleancut import datasets

    quantize = _bench("quantize")
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    export_onnx(ckpt, tmp_path / "m.onnx", temperature=0.5, input_format="uint8_nhwc")
    spec = get_model(tmp_path / "m.onnx")
    calib = datasets.select([make_shapes_dataset(tmp_path / "d", n=8, size=48)], ["all"])["all"]
    x = (np.random.default_rng(3).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    reference = OnnxModel(spec).predict_batch(x)
    for network_only in (False, True):
        out = tmp_path / f"q{network_only}"
        out.mkdir()
        variant = quantize.make_variants(spec, calib, out, reduce_range=True, only=("int8-static-u8",),
                                         network_only=network_only)["int8-static-u8"]
        graph = onnx.load(str(variant.path)).graph
        producer = {o: n for n in graph.node for o in n.output}["alpha"]
        kinds = {n.op_type for n in graph.node}
        assert "QuantizeLinear" in kinds  # the network itself is quantised either way
        assert producer.op_type == ("Sigmoid" if network_only else "DequantizeLinear")
        q = OnnxModel(variant).predict_batch(x)
        assert np.abs(q - reference).mean() < 0.05


def test_parity_failure_refuses_to_write(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    with pytest.raises(ModelError, match="differs from torch"):
        export_onnx(ckpt, tmp_path / "x.onnx", tolerance=-1.0)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.json").exists()


def test_tampered_model_fails_sha_check(tmp_path):
    ckpt, _, _ = _checkpoint(tmp_path, "unet")
    export_onnx(ckpt, tmp_path / "m.onnx")
    with open(tmp_path / "m.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match="sha256"):
        OnnxModel(get_model(tmp_path / "m.onnx"))


def test_cli_export_and_evaluate_onnx_and_checkpoint(tmp_path, capsys):
    root = make_shapes_dataset(tmp_path / "d", n=12, size=48)
    ckpt, _, _ = _checkpoint(tmp_path, "cutnet")
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "c.onnx")]) == 0
    assert "max abs difference" in capsys.readouterr().out
    for model in (str(tmp_path / "c.onnx"), str(ckpt)):
        out = tmp_path / ("eval-" + model[-4:])
        assert cli_main(["evaluate", model, "--data", str(root), "--split", "val", "train", "-o", str(out)]) == 0
        report = json.loads((out / "metrics.json").read_text())
        assert set(report["results"]) == {"val (1)", "train (11)"}
        assert {"MAE", "maxF", "wF", "Sm", "maxE", "IoU", "PixAcc"} <= set(report["results"]["val (1)"])
        assert (out / "curves.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| train (11) |" in printed


def test_onnx_and_torch_score_the_same(tmp_path):
    root = make_shapes_dataset(tmp_path / "d", n=6, size=48)
    ckpt, model, cfg = _checkpoint(tmp_path, "unet")
    export_onnx(ckpt, tmp_path / "u.onnx")
    from cleancut import datasets

    pairs = datasets.select([root], ["all"])["all"]
    a = evaluate(OnnxModel(get_model(tmp_path / "u.onnx")), pairs).results()
    b = evaluate(TorchModel(model, spec_for(cfg)), pairs).results()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=2e-3), key


def test_onnx_to_checkpoint_recovers_trainable_weights(tmp_path, tool):
    """tools/onnx_to_checkpoint.py: an exported model (BatchNorm folded) back into torch, exact in eval
    mode and close in train mode (BatchNorm statistics re-measured on data)."""
    tool_mod = tool("onnx_to_checkpoint")

    ckpt, model, cfg = _checkpoint(tmp_path, "cutnet")
    export_onnx(ckpt, tmp_path / "m.onnx", name="m")
    data = make_shapes_dataset(tmp_path / "shapes", n=24, size=SIZE["cutnet"], seed=3)
    out = tmp_path / "recovered.pt"
    tool_mod.main([str(tmp_path / "m.onnx"), "--arch", "cutnet", "--kwargs", json.dumps(TINY_KWARGS["cutnet"]),
                   "--size", str(SIZE["cutnet"]), "--data", str(data), "--images", "16", "--out", str(out)])
    state = torch.load(out)["model"]
    rebuilt = archs.build("cutnet", **TINY_KWARGS["cutnet"])
    rebuilt.load_state_dict(state)
    x = torch.randn(2, 3, SIZE["cutnet"], SIZE["cutnet"])
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model(x), atol=1e-4)
        rebuilt.train()
        train_out = rebuilt(x)[0]  # batch statistics instead of running ones
        assert (train_out - model(x)).abs().mean() < 0.5 * model(x).abs().mean()


def test_average_checkpoints(tmp_path, tool):
    tool_mod = tool("average_checkpoints")

    ckpt, model, cfg = _checkpoint(tmp_path, "unet")
    first = torch.load(ckpt)
    second = {**first, "epoch": 2, "model": {k: (v + 1 if v.is_floating_point() else v + 5) for k, v in first["model"].items()}}
    atomic_save(second, tmp_path / "second.pt")
    tool_mod.main([str(ckpt), str(tmp_path / "second.pt"), "-o", str(tmp_path / "avg.pt")])
    avg = torch.load(tmp_path / "avg.pt")
    for k, v in first["model"].items():
        expected = v + 0.5 if v.is_floating_point() else v + 5
        assert torch.allclose(avg["model"][k], expected), k
    assert avg["averaged"]["epochs"] == [1, 2]
    report = export_onnx(tmp_path / "avg.pt", tmp_path / "avg.onnx", name="avg")  # a normal checkpoint
    assert report["max_abs_diff"] < 1e-4
    torch.save({"model": second["model"]}, tmp_path / "bare.pt")  # e.g. from tools/onnx_to_checkpoint.py
    tool_mod.main([str(tmp_path / "bare.pt"), str(ckpt), "-o", str(tmp_path / "avg2.pt")])
    avg2 = torch.load(tmp_path / "avg2.pt")
    assert avg2["config"] == first["config"] and torch.allclose(avg2["model"][k], avg["model"][k])
    with pytest.raises(SystemExit, match="none of the checkpoints has a training config"):
        tool_mod.main([str(tmp_path / "bare.pt"), str(tmp_path / "bare.pt"), "-o", str(tmp_path / "avg3.pt")])
    other = tmp_path / "other.pt"
    (tmp_path / "x").mkdir()
    cnn, _, _ = _checkpoint(tmp_path / "x", "cnn")
    with pytest.raises(SystemExit, match="not a checkpoint of the same architecture"):
        tool_mod.main([str(ckpt), str(cnn), "-o", str(other)])


def test_full_range_depthwise_keeps_8_bit_weights_only_where_no_kernel_saturates(tmp_path):
    import onnx
    from onnx import numpy_helper

    from cleancut import datasets

    quantize = _bench("quantize")
    ckpt, _, _ = _checkpoint(tmp_path, "cutnet")
    export_onnx(ckpt, tmp_path / "m.onnx", input_format="uint8_nhwc")
    spec = get_model(tmp_path / "m.onnx")
    depthwise = set(quantize.depthwise_weights(spec.path))
    assert depthwise  # cutnet has depthwise convolutions
    calib = datasets.select([make_shapes_dataset(tmp_path / "d", n=6, size=48)], ["all"])["all"]
    widest = {}
    for full in (False, True):
        out = tmp_path / f"q{full}"
        out.mkdir()
        variant = quantize.make_variants(spec, calib, out, reduce_range=True, only=("int8-static-u8",),
                                         network_only=True, full_range_depthwise=full)["int8-static-u8"]
        graph = onnx.load(str(variant.path)).graph
        ints = {i.name: np.abs(numpy_helper.to_array(i).astype(np.int32)).max() for i in graph.initializer
                if i.data_type == onnx.TensorProto.INT8}
        # each quantised weight feeds a DequantizeLinear whose output replaces the float weight
        feeds = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        widest[full] = {kind: max(ints[feeds[c.input[1]]] for c in convs
                                  if (c.input[1] in feeds) and (feeds[c.input[1]] in ints)
                                  and (feeds[c.input[1]].removesuffix("_quantized") in depthwise) == kind)
                        for kind in (True, False)}
    assert widest[False][True] <= 64 and widest[False][False] <= 64  # --reduce-range: 7 bits everywhere
    assert widest[True][True] > 64  # depthwise: the full 8 bits
    assert widest[True][False] <= 64  # GEMM-based convolutions: still 7 bits


def test_keep_aspect_export_runs_each_photo_at_its_own_shape(tmp_path):
    from PIL import Image

    from cleancut.preprocess import network_size
    from cleancut.runtime import Session

    ckpt, model, _ = _checkpoint(tmp_path, "litefpn")  # its pyramid pooling must follow the input's size
    report = export_onnx(ckpt, tmp_path / "k.onnx", keep_aspect=True, input_format="uint8_nhwc")
    assert report["max_abs_diff"] < 1e-4 and report["size_wide"] != [160, 160]  # checked at two shapes
    spec = get_model(tmp_path / "k.onnx")
    assert spec.aspect == "keep" and spec.size_multiple == 32
    rng = np.random.default_rng(4)
    photos = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
              ((120, 200), (200, 120), (90, 90), (120, 200))]
    sizes = [network_size(spec, p.size) for p in photos]
    assert sizes[:3] == [(128, 192), (192, 128), (160, 160)]  # about 160 x 160 pixels, the photo's shape
    session = Session(spec, batch_size=4)
    together = session.predict(photos)
    for photo, size, alpha in zip(photos, sizes, together):
        assert alpha.shape == (photo.size[1], photo.size[0])
        alone = session.predict([photo])[0]
        np.testing.assert_allclose(alpha, alone, atol=1e-5)  # grouped by shape, in the caller's order
        with torch.no_grad():  # torch at the same shape, resized back the same way
            x = torch.from_numpy(np.asarray(photo.resize(size[::-1], Image.BILINEAR)).copy())
            ref = TorchModel(model, spec).predict_batch(
                ((x.permute(2, 0, 1)[None].float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1))
                 / torch.tensor(spec.std).view(1, 3, 1, 1)).numpy())[0]
        from cleancut.preprocess import resize_alpha

        np.testing.assert_allclose(alpha, resize_alpha(ref, photo.size), atol=1e-4)
    # the same checkpoint exported square squashes the photo: a different mask
    export_onnx(ckpt, tmp_path / "s.onnx", input_format="uint8_nhwc")
    square = Session(get_model(tmp_path / "s.onnx")).predict(photos[:1])[0]
    assert np.abs(square - together[0]).max() > 1e-3
    # a keep-aspect spec in front of a fixed-size graph is refused with the fix named
    data = json.loads((tmp_path / "s.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps({**data, "aspect": "keep"}))
    with pytest.raises(ModelError, match="fixed height and width.*--keep-aspect"):
        Session(get_model(tmp_path / "s.onnx"))
    # evaluation batches photos of one shape together and scores every pair
    root = make_shapes_dataset(tmp_path / "d", n=6, size=48)
    pairs = datasets.select([str(root)], ["train"])["train"]
    assert evaluate(OnnxModel(spec), pairs, batch_size=4).results()["maxF"] > 0


def test_aspect_crops_benchmark_scores_the_same_weights_kept_and_stretched(tmp_path, capsys):
    bench = _bench("aspect_crops")
    mask = np.zeros((50, 100), np.uint8)
    mask[30:40, 80:96] = 255  # centre (87.5, 34.5): the strips follow it, inside the photo
    assert bench.strip_boxes(mask, 3) == {"wide": (0, 17, 100, 50), "tall": (79, 0, 96, 50)}
    # a 10:1 photo has no 5:1 wide strip; no foreground: centred on the photo
    assert bench.strip_boxes(np.zeros((10, 100), np.uint8), 5) == {"tall": (49, 0, 51, 10)}
    root = make_shapes_dataset(tmp_path / "d", n=8, size=48)
    ckpt, _, _ = _checkpoint(tmp_path, "litefpn")
    export_onnx(ckpt, tmp_path / "k.onnx", keep_aspect=True)
    assert bench.main([str(tmp_path / "k.onnx"), "--data", str(root), "--split", "train", "--ratio", "3"]) == 0
    out = capsys.readouterr().out
    assert "| strip | strips | keep maxF | keep wF | keep MAE | stretch maxF | stretch wF | stretch MAE |" in out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| wide") or line.startswith("| tall")}
    assert set(rows) == {"wide 3:1", "tall 1:3"}
    for cells in rows.values():
        assert 0 < int(cells[0]) <= 8
        assert cells[1:4] != cells[4:7]  # the same weights at two input shapes: different masks
    export_onnx(ckpt, tmp_path / "s.onnx")  # a fixed-size graph can only be stretched
    assert bench.main([str(tmp_path / "s.onnx"), "--data", str(root), "--split", "train", "--ratio", "2"]) == 0
    out = capsys.readouterr().out
    assert "stretch maxF" in out and "keep maxF" not in out and "| wide 2:1 |" in out
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "s.onnx"), "--data", str(root), "--ratio", "0.5"])
    assert "each ratio must be 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("size, expected", [
    ((640, 480), (352, 480)), ((480, 640), (480, 352)), ((854, 480), (320, 544)), ((416, 416), (416, 416)),
    ((1, 1), (416, 416)), ((4000, 10), (32, 5408)), ((10, 4000), (5408, 32)), ((100000, 1), (32, 5408)),
])
def test_network_size_keeps_the_aspect_at_about_the_same_pixels(size, expected):
    import dataclasses

    from cleancut.models import ModelSpec
    from cleancut.preprocess import network_size

    spec = ModelSpec(name="k", file="k.onnx", input_size=(416, 416), aspect="keep")
    h, w = network_size(spec, size)
    assert (h, w) == expected and h % 32 == 0 and w % 32 == 0
    assert h * w <= 416 * 416 * 1.25
    if min(size) * 100 > max(size):  # an ordinary photo: the aspect within one rounding step
        assert abs(w / h - size[0] / size[1]) <= (size[0] / size[1]) * 32 / min(h, w)
    assert network_size(dataclasses.replace(spec, aspect="stretch"), size) == (416, 416)


def _qdq_pad_graph():
    """x -> Q -> DQ -> Pad(0) -> Q -> DQ -> Conv, and a Shape of the first DQ's output (what
    ``upsample_like`` exports): the data movement an int8 QDQ export leaves in float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale, zero = np.float32(0.02), np.uint8(128)
    inits = [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(zero), "z"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 2, 2], np.int64), "pads"),
             numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
             helper.make_node("Shape", ["xf"], ["shape"]),
             helper.make_node("Pad", ["xf", "pads"], ["padded"], name="pad", mode="constant"),
             helper.make_node("QuantizeLinear", ["padded", "s", "z"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pf"]),
             helper.make_node("Conv", ["pf", "w"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def test_fold_qdq_moves_pads_8_bit_levels_and_measures_shapes_without_dequantising():
    import onnxruntime as ort
    from onnx.numpy_helper import to_array as onnx_array

    from cleancut.train.quantize import fold_qdq_moves

    model = _qdq_pad_graph()
    x = np.random.default_rng(1).uniform(-2, 2, (1, 3, 6, 5)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run(model)
    assert fold_qdq_moves(model) == 2  # the Shape and the Pad
    kinds = [n.op_type for n in model.graph.node]
    assert kinds.count("DequantizeLinear") == 1 and kinds.count("QuantizeLinear") == 1  # only the Conv's
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    shape = next(n for n in model.graph.node if n.op_type == "Shape")
    assert pad.input[0] == "xq" and shape.input[0] == "xq"
    after = run(model)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])

    # weight recovery reads the folded graph as float again: the padding pads with 0
    from cleancut.train.recover import dequantized

    plain = dequantized(model)
    assert {n.op_type for n in plain.graph.node} == {"Shape", "Pad", "Conv"}
    w = next(t for t in plain.graph.initializer if t.name == "w")
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2)))
    expected = torch.nn.functional.conv2d(torch.from_numpy(padded), torch.from_numpy(onnx_array(w))).numpy()
    assert np.allclose(run(plain)[0], expected, atol=1e-5)


def test_int8_litefpn_with_a_detail_branch_keeps_no_float_detour_for_pads_and_shapes(tmp_path):
    import onnx

    from cleancut.train.quantize import make_variants

    cfg = load_config(None, ["model.arch=litefpn", "data.size=64", "model.kwargs={decoder: 8, detail: 8}"])
    torch.manual_seed(0)
    model = archs.build("litefpn", **cfg.model.kwargs)
    path = tmp_path / "detail.pt"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, path)
    export_onnx(path, tmp_path / "detail.onnx", keep_aspect=True, input_format="uint8_nhwc")
    spec = get_model(tmp_path / "detail.onnx")
    calib = datasets.select([make_shapes_dataset(tmp_path / "d", n=4, size=64)], ["all"])["all"]
    variant = make_variants(spec, calib, tmp_path / "q", reduce_range=True, only=("int8-static-u8",),
                            network_only=True)["int8-static-u8"]
    graph = onnx.load(str(variant.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    pads = [n for n in graph.node if n.op_type == "Pad"]
    shapes = [n for n in graph.node if n.op_type == "Shape" and n.input[0] in producer]
    assert pads and shapes  # the stride-2 convolutions' padding; upsample_like's sizes
    assert all(producer[n.input[0]].op_type != "DequantizeLinear" for n in pads + shapes)
    x = (np.random.default_rng(3).random((1, 64, 96, 3)) * 255).astype(np.uint8)
    assert OnnxModel(variant).predict_batch(x).shape == (1, 64, 96)
