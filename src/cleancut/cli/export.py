"""``cleancut export``: checkpoint -> ONNX + JSON spec, checked against torch."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (+ JSON spec) with a parity check",
                       description="Write an ONNX model and its JSON spec, then compare ONNX Runtime with torch.")
    p.add_argument("checkpoint", help="checkpoint .pt or run folder (uses checkpoints/best.pt)")
    p.add_argument("--out", "-o", required=True, help="output .onnx path (the .json spec goes beside it)")
    p.add_argument("--name", help="model name in the spec (default: the file stem)")
    p.add_argument("--size", type=int, help="input size (default: the training size)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs difference allowed vs torch (default 1e-4; 2e-3 with --fp16-weights; "
                        "divided by T with --temperature T < 1)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store the convolution weights as float16 (half the file; ONNX Runtime computes in "
                        "float32 after casting them back once at load)")
    p.add_argument("--output-levels", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="calibration the runtime applies: alpha = clip((p - LOW) / (HIGH - LOW)) (default: none)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sharpen inside the graph: alpha = sigmoid(logit / T); T < 1 gives crisper masks and, "
                        "unlike --output-levels, keeps every pixel's order (default: 1, none)")
    p.add_argument("--alpha-temperature", type=float, metavar="T",
                   help="sharpening the runtime applies after the resize to the photo's size: alpha = "
                        "sigmoid(logit(p) / T), from 0.05 to 1; crisper edges than --temperature, which the "
                        "upsampling blurs again (default: none)")
    p.add_argument("--keep-aspect", action="store_true",
                   help="free input height and width: each photo runs at its own aspect ratio with about "
                        "--size x --size pixels (sides multiples of 32) instead of being squashed to a square")
    p.add_argument("--uint8-input", action="store_true",
                   help="the model takes raw uint8 pixels [N, H, W, C] and normalises them in the graph "
                        "(faster inference: no float work in numpy)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._deps import require
    from ..errors import ConfigError
    from ..models import MIN_ALPHA_TEMPERATURE

    extra = {"output_levels": args.output_levels} if args.output_levels else {}
    if args.alpha_temperature is not None:
        if not MIN_ALPHA_TEMPERATURE <= args.alpha_temperature <= 1:
            raise ConfigError(f"--alpha-temperature must be from {MIN_ALPHA_TEMPERATURE:g} to 1 (below 1 sharpens), "
                              f"got {args.alpha_temperature:g}")
        extra["alpha_temperature"] = args.alpha_temperature
    require("torch", "export")
    from ..train.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, name=args.name, size=args.size, tolerance=args.tolerance,
                         extra=extra or None, input_format="uint8_nhwc" if args.uint8_input else "float_nchw",
                         fp16_weights=args.fp16_weights, temperature=args.temperature,
                         keep_aspect=args.keep_aspect)
    print(f"wrote {args.out} (+ .json); ONNX Runtime vs torch max abs difference {report['max_abs_diff']:.2e}")
    return 0
