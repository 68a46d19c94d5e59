"""``cleancut live``: cut out every frame of a camera, a stream or a paced file as it arrives.

Frames arriving while the model is busy are dropped, so the output stays current. Frames/s,
latency (capture to output, p50 / p95) and dropped frames are shown on the terminal while it runs
and printed at the end. Ctrl-C stops cleanly (the output file is finished and kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._options import add_options_to_parser, options_from_namespace

EPILOG = """examples:
  cleancut live 0 -o virtualcam --mode blur             # webcam -> virtual camera, background blurred
  cleancut live /dev/video2 --preview --bg-color green   # a window showing the result
  cleancut live rtsp://cam.local/stream -o cut.webm      # a network stream into a transparent WebM
  cleancut live clip.mp4 -o out.webm --bg-color green    # a file played at its own frame rate
  cleancut live clip.mp4 --no-pacing -o - | ffplay -f rawvideo -pixel_format rgb24 -video_size 640x480 -
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "live", help="remove the background of a camera, stream or file, frame by frame, in real time",
        description="Cut out every frame as it arrives, with no look-ahead: a camera (index or "
                    "/dev/videoN), a network stream URL (RTSP, RTMP, HTTP, UDP, SRT) or a video file "
                    "played at its own frame rate. Needs the 'video' extra (PyAV); -o virtualcam needs "
                    "the 'live' extra (pyvirtualcam).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE", help="camera index or device, stream URL, or video file")
    parser.add_argument("-o", "--output", metavar="SINK", action="append", default=[],
                        help="where results go (repeatable): a .webm/.mov/.mp4 file, an rtmp:// udp:// "
                             "tcp:// srt:// URL, 'virtualcam', or '-' for raw frames on stdout")
    parser.add_argument("--preview", action="store_true", help="show the results in a window (q to stop)")
    parser.add_argument("--no-pacing", dest="pacing", action="store_false",
                        help="a file source: process every frame as fast as possible instead of at the "
                             "file's frame rate (nothing is dropped)")
    parser.add_argument("--no-smooth", dest="smooth", action="store_false",
                        help="do not smooth the matte over time (default: a causal, motion-gated running "
                             "average: no look-ahead, no delay)")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N processed frames")
    parser.add_argument("--stats-json", metavar="FILE", help="also write the final figures to FILE as JSON")
    add_options_to_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..live.session import LiveSession
    from ..live.sinks import BackgroundSinks, PreviewSink, open_sink

    options = options_from_namespace(args)
    if not args.output and not args.preview:
        raise ConfigError("nowhere to send the results: give -o SINK (a file, a stream URL, virtualcam or -) "
                          "and/or --preview.")
    if args.output.count("-") and sys.stdout.isatty():
        raise ConfigError("refusing to write raw frames to a terminal; pipe stdout into a player or a file.")
    session = LiveSession(args.source, options, smooth=args.smooth, pacing=args.pacing,
                          max_frames=args.max_frames, max_seconds=args.max_seconds)
    sinks: list = [BackgroundSinks([open_sink(target, session.options, session.source.rate)
                                    for target in args.output])] if args.output else []
    if args.preview:
        sinks.append(PreviewSink())
    show = sys.stderr.isatty()
    last_shown = 0.0
    ok = False
    stopped = ""
    try:
        try:
            for frame in session:
                for sink in sinks:
                    sink.write(frame)
                if show and time.monotonic() - last_shown >= 1.0:
                    print(f"\rcleancut live: {session.stats.line(recent=True)}   ", end="", file=sys.stderr)
                    last_shown = time.monotonic()
        except KeyboardInterrupt:
            stopped = " (stopped)"
        ok = True
    finally:
        for sink in sinks:
            sink.close(ok=ok)
        if show:
            print("\r", end="", file=sys.stderr)
    stats = session.stats
    print(f"cleancut live: {stats.frames} frames in {stats.elapsed:.1f} s{stopped}: {stats.line()}",
          file=sys.stderr)
    for target in args.output:
        if target not in ("-", "virtualcam"):
            print(f"cleancut live: wrote {target}", file=sys.stderr)
    if args.stats_json:
        with open(args.stats_json, "w") as fh:
            json.dump(stats.to_dict(), fh, indent=1)
    return 0
