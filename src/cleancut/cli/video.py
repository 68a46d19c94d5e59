"""``cleancut video``: remove the background of every frame of a clip.

The output's suffix picks what is written: ``.webm`` (VP9 with alpha), ``.mov`` (ProRes 4444 with
alpha), ``.mp4`` (H.264, needs a background or ``--mode mask``) or a folder (one PNG per frame).
Every per-frame option of ``cleancut remove`` applies; the matte is smoothed over time unless
``--no-smooth``. Frame count, timestamps, rotation and the audio track are kept.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._options import add_options_to_parser, options_from_namespace

EPILOG = """examples:
  cleancut video clip.mp4 -o clip.webm                    # transparent VP9 WebM
  cleancut video clip.mov -o cut.mov                      # ProRes 4444 with alpha
  cleancut video clip.mp4 -o green.mp4 --bg-color '#00b140'
  cleancut video clip.mp4 -o matte.mp4 --mode mask        # the matte as a grayscale video
  cleancut video clip.mp4 -o frames/                      # frame_000001.png ...
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "video", help="remove the background of a video",
        description="Remove the background of every frame of a video (anything FFmpeg reads: "
                    "MP4, MOV, WebM, MKV, AVI, animated GIF). Needs the 'video' extra (PyAV).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="INPUT", help="the video file")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="output file or folder; the suffix picks the output: .webm (VP9 "
                             "with alpha), .mov (ProRes 4444 with alpha), .mp4 (H.264, no alpha: "
                             "needs --bg-color, --bg-image, --mode blur or --mode mask), or a "
                             "folder (one image per frame, plus timestamps.csv and audio.mka)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo an output that already exists (default: skip it)")
    parser.add_argument("--no-smooth", dest="smooth", action="store_false",
                        help="do not smooth the matte over time (default: a motion-gated moving "
                             "average, which removes flicker where nothing moves)")
    parser.add_argument("--no-audio", dest="audio", action="store_false",
                        help="leave the audio track out (default: copied, or re-encoded where "
                             "the container needs it)")
    add_options_to_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..video.remove import remove_video

    options = options_from_namespace(args)
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *a, **k: tqdm.write(
        f"cleancut video: warning: {message}", file=sys.stderr)
    try:
        result = remove_video(args.input, args.output, options, smooth=args.smooth,
                              overwrite=args.overwrite, progress=None, audio=args.audio)
    finally:
        warnings.showwarning = previous
    if result.skipped:
        print(f"cleancut video: {result.target} exists; skipped (--overwrite redoes it)",
              file=sys.stderr)
        return 0
    audio = f", audio {result.audio}" if result.audio else ", no audio"
    print(f"cleancut video: wrote {result.target}: {result.frames} frames, {result.seconds:.2f} s"
          f"{audio}, in {result.elapsed:.1f} s ({result.fps:.1f} frames/s)", file=sys.stderr)
    return 0
