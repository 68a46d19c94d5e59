"""Teach it your photos, measured (issue 34, deliverable 4): for three kinds of photo where
``cleancut-default`` is weakest, fine-tune it on 10, 20 and 50 photos of the kind and score it
before and after on 50 held-out photos of that kind and on ``val`` / ``duts-val`` (forgetting).

    nice -n 19 .venv/bin/python benchmarks/teach.py --data ../shared/data datasets --threads 1

(about 1 h 40 min on the 2-core machine when nothing else runs: 9 runs of ``cleancut finetune
--minutes 10``, each followed by about half a minute of scoring; a run with 10 photos and
``--minutes 1`` took 1.5 min end to end). What the kinds were chosen on:

    nice -n 19 .venv/bin/python benchmarks/teach.py --scan --data ../shared/data datasets --threads 1

``--scan`` scores the default on every candidate kind (:func:`candidates`) on up to
``--scan-photos`` photos of the kind that are *not* among its 50 held-out photos (so the
held-out "before" figures are not the ones the kind was selected on) and writes ``scan.md`` /
``scan.json``; no training.

A *kind* (:class:`Kind`) is a named selection of labelled pairs: one or more sets, optionally
narrowed to stem prefixes (an Oxford-IIIT Pet breed, DAVIS videos, an ImageNet synset of
DUTS-TR), with the splits its held-out photos are drawn from (in order of preference: the split
the default was not trained on first) and the splits its training photos come from. The draw is
seeded (``--seed``): 50 held-out photos, then the training photos among the rest, the 10 a prefix
of the 20 and the 20 of the 50. Frames of one video are near-duplicates, so a kind of video
frames holds out whole videos (``per_video`` evenly spaced frames of each) and trains on frames
of the other videos only. ``val``, ``duts-val`` (the forgetting figures) and ``duts-te`` (the test
set) are never drawn.

Each run is ``cleancut.train.finetune.finetune`` (the command's own code) on a copy of the photos
in ``OUT/sets/KIND/train-N/``, with ``--minutes``, ``--threads`` and replay of the training photos of
``--data`` (as the command does by default) less the kind's held-out photos and the other frames of
held-out videos, which a mirror root (symlinks and a ``splits.csv`` of its own, in
``OUT/replay/KIND``) leaves out. The models are registered in a throwaway model folder
(``OUT/models``, set as ``$CLEANCUT_MODELS_DIR``) and removed once scored; the shared data is
only read. Then the int8 model and the default are scored
like ``cleancut evaluate`` (maxF / wF / MAE / IoU) on the kind's 50 held-out photos and on every
``--stride``-th photo of ``val`` and ``duts-val`` (default 4: 66 and 250 photos), their latency is
compared photo by photo, interleaved (median ms at ``--threads``) and their graphs' operators
counted. Everything lands in ``OUT`` (default ``benchmarks/out/teach``): ``baseline.json``,
``runs/KIND-N/{finetune,result}.json`` and the alpha masks of the held-out photos, then
``teach.json``, ``teach.md`` (with a line per kind on the goal: 20 photos, 10 minutes) and
``sheet.jpg`` (``--sheet-photos`` held-out photos of each kind, evenly spaced over its draw: the
photo, its label, then the default's and each fine-tuned model's cut-out over a grey
checkerboard, with that photo's MAE). A killed run resumes: finished runs are skipped, a run
whose model was registered but not scored is scored, an unfinished ``finetune`` starts again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("maxF", "wF", "MAE", "IoU")
ALL_SPLITS = ["train", "val", "val-objects", "duts-val", "duts-te"]
NEVER_DRAWN = {"val", "duts-val", "duts-te"}  # forgetting figures and the test set
HELD_MARK = "teach-held-out"  # the split of a kind's held-out photos in its replay mirror


# ----------------------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Kind:
    """A kind of photo: the pairs of ``sets`` whose stem starts with one of ``prefixes`` (all when
    empty). Held-out photos are drawn from ``held_splits`` in that order (all of the first split
    before any of the second), training photos from ``train_splits`` less the held-out ones; with
    ``per_video``, whole videos are held out (see :func:`draw`)."""

    name: str
    what: str
    sets: tuple[str, ...]
    prefixes: tuple[str, ...] = ()
    held_splits: tuple[str, ...] = ("train",)
    train_splits: tuple[str, ...] = ("train",)
    note: str = ""
    per_video: int = 0  # frames of videos (stem = VIDEO_NNNNN): this many from each held-out video, 0 = photos

    def __post_init__(self):
        bad = NEVER_DRAWN & set(self.held_splits + self.train_splits)
        if bad:
            raise ValueError(f"kind {self.name}: never draw from {', '.join(sorted(bad))} (forgetting / test figures)")

    def matches(self, entry: Entry) -> bool:
        return entry.set in self.sets and (not self.prefixes or entry.stem.startswith(self.prefixes))

    def group(self, entry: Entry) -> tuple[str, str]:
        """What is drawn whole: a video (its frames are near-duplicates of each other) or one photo."""
        return (entry.set, entry.stem.rsplit("_", 1)[0]) if self.per_video else entry.key


#: DAVIS-2016 videos of people in sport and action (the scan's weakest DAVIS family)
ACTION_VIDEOS = ("bmx-trees", "breakdance", "dance-twirl", "horsejump-high", "motocross-jump", "paragliding-launch",
                 "parkour", "scooter-black", "soapbox")

#: the three kinds measured, chosen with --scan (see docs/training.md)
KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("coco-mini", "busy COCO scenes; label = the union of every COCO object (tables and food too)",
         ("coco-mini",), held_splits=("val-objects", "train"),
         note="the weakest kind with enough photos; every coco-mini photo is in the shared train split, so the "
              "default was trained on the held-out photos too (and is weak on them all the same: the label's rule, "
              "not the salient subject, is what it misses)"),
    Kind("davis-action", "people in sport and action: frames of 9 DAVIS-2016 videos (" + ", ".join(ACTION_VIDEOS) + ")",
         ("davis16",), tuple(v + "_" for v in ACTION_VIDEOS), held_splits=("val-objects", "train"), per_video=10,
         note="whole videos are held out, 10 evenly spaced frames from each of 5 (paragliding-launch, a val-objects "
              "video the default never saw, and 4 drawn from the train split), and the training frames come from the "
              "other 4 videos only; frames of one video are near-duplicates of each other, so the training photos "
              "are near-duplicates among themselves, never of a held-out frame"),
    Kind("pets", "cats and dogs of Oxford-IIIT Pet (Abyssinian, Bengal, American bulldog); label = the pet plus its "
                 "trimap border", ("oxford-pets",), held_splits=("val-objects", "train"),
         note="held-out: 50 of the 60 val-objects pets, which the default was not trained on; training photos from "
              "the train split. The labels include the trimap's 4 px border around every animal, so a fine-tune "
              "learns that convention: a 'teach it your labels' case as much as a kind of photo"),
]}


@dataclass(frozen=True)
class Entry:
    set: str
    stem: str
    split: str
    image: str
    mask: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.set, self.stem)


def catalogue(roots: list[str]) -> list[Entry]:
    """Every labelled pair of ``roots`` with its split (sorted by set and stem)."""
    from cleancut import datasets

    entries = []
    for root in roots:
        for split, pairs in datasets.select([root], ALL_SPLITS, check=False).items():
            entries += [Entry(p.set, p.stem, split, str(p.image), str(p.mask)) for p in pairs]
    seen = Counter(e.key for e in entries)
    doubled = [k for k, n in seen.items() if n > 1]
    if doubled:
        raise SystemExit(f"pairs found twice under --data (same set and stem): {doubled[:5]}")
    return sorted(entries, key=lambda e: e.key)


@dataclass
class Draw:
    held_out: list[Entry]
    train: list[Entry]  # the largest size; smaller sizes are prefixes
    rest: list[Entry] = field(default_factory=list)  # the kind's other photos, outside held-out videos (--scan)
    excluded: set = field(default_factory=set)  # keys of the held-out photos and of every frame of their videos


def draw(kind: Kind, entries: list[Entry], held_out: int, n_train: int, seed: int) -> Draw:
    """The seeded draw of ``kind``: ``held_out`` photos (from ``kind.held_splits`` in order), then
    ``n_train`` training photos among the others (from ``kind.train_splits``); every photo of the
    kind left over, in a seeded order, as ``rest``. For a kind of video frames (``per_video``),
    whole videos are held out (``per_video`` frames of each, evenly spaced) and training frames
    come from the other videos only, so no held-out frame has a near-duplicate among them. Too
    few photos -> ValueError."""
    mine = [e for e in entries if kind.matches(e) and e.split not in NEVER_DRAWN]
    rng = random.Random(f"{seed}:{kind.name}")
    groups: dict[tuple, list[Entry]] = {}
    for e in mine:
        groups.setdefault(kind.group(e), []).append(e)
    held: list[Entry] = []
    held_groups: set = set()
    for split in kind.held_splits:
        part = sorted(g for g, members in groups.items() if members[0].split == split)
        rng.shuffle(part)
        for g in part:
            if len(held) >= held_out:
                break
            frames = groups[g]
            take = min(kind.per_video or 1, len(frames), held_out - len(held))
            held += [frames[int(i * len(frames) / take)] for i in range(take)]
            held_groups.add(g)
    taken = {e.key for e in held}
    train_pool = [e for e in mine if e.split in kind.train_splits and kind.group(e) not in held_groups]
    rng.shuffle(train_pool)
    train = train_pool[:n_train]
    if len(held) < held_out or len(train) < n_train:
        raise ValueError(f"kind {kind.name}: {len(mine)} photos give {len(held)} held-out (of {held_out}) and "
                         f"{len(train_pool)} training photos (of {n_train})")
    taken |= {e.key for e in train}
    rest = [e for e in mine if e.key not in taken and kind.group(e) not in held_groups]
    rng.shuffle(rest)
    excluded = {e.key for e in mine if kind.group(e) in held_groups}
    return Draw(held, train, rest, excluded)


def candidates(entries: list[Entry], roots: list[str] = (), min_photos: int = 24) -> list[Kind]:
    """The kinds --scan tries: every set, every Oxford-IIIT Pet breed, every DAVIS video, the
    pets and horses held out from val-objects, and every ImageNet synset of DUTS-TR with at least
    100 photos outside duts-val."""
    out: list[Kind] = list(KINDS.values())
    sets = sorted({e.set for e in entries if e.split not in NEVER_DRAWN})
    for s in sets:
        out.append(Kind(f"set-{s}", f"all of {s}", (s,), held_splits=("val-objects", "train")))
    for s, sep in (("oxford-pets", "_"), ("davis16", "_")):
        groups = Counter(e.stem.rsplit("_", 1)[0] for e in entries if e.set == s)
        for g, n in sorted(groups.items()):
            if n >= min_photos:
                out.append(Kind(f"{s}-{g}", f"{s}: {g}", (s,), (g + sep,), held_splits=("val-objects", "train"),
                                train_splits=("train", "val-objects")))
    synsets = Counter(e.stem.split("_")[0] for e in entries if e.set == "DUTS-TR" and e.split not in NEVER_DRAWN)
    for syn, n in sorted(synsets.items()):
        if syn.startswith("n") and syn[1:].isdigit() and n >= 100:
            out.append(Kind(f"duts-{syn}", f"DUTS-TR synset {syn} {synset_name(syn, roots)}", ("DUTS-TR",), (syn + "_",)))
    unique: dict[tuple, Kind] = {}  # one kind per selection (the measured kinds' names first)
    for k in out:
        unique.setdefault((k.sets, k.prefixes, k.held_splits, k.train_splits), k)
    return list(unique.values())


def synset_name(syn: str, roots: list[str]) -> str:
    """The class name of an ImageNet synset from the file names of the shared data's unlabelled
    ImageNet sample (``unlabelled/imagenet_sample/n01440764_tench.jpg``), if a root has it."""
    for root in roots:
        for p in (Path(root) / "unlabelled" / "imagenet_sample").glob(f"{syn}_*"):
            return p.stem.split("_", 1)[1]
    return ""


# --------------------------------------------------------------------------------------- scoring


def pairs_of(entries: list[Entry], set_name: str | None = None):
    from cleancut.datasets import Pair

    return [Pair(Path(e.image), Path(e.mask), set_name or e.set, e.stem) for e in entries]


def score(model, entries: list[Entry]) -> dict[str, float]:
    """maxF / wF / MAE / IoU of an OnnxModel on ``entries``, as ``cleancut evaluate`` scores them."""
    from cleancut.evaluate import evaluate

    res = evaluate(model, pairs_of(entries)).results()
    return {k: round(float(res[k]), 5) for k in FIGURES} | {"photos": len(entries)}


def onnx_model(name_or_spec, threads: int):
    from cleancut.evaluate import OnnxModel
    from cleancut.models import get_model

    spec = get_model(name_or_spec) if isinstance(name_or_spec, (str, Path)) else name_or_spec
    return OnnxModel(spec, threads=threads)


def forgetting_sets(entries: list[Entry], stride: int) -> dict[str, list[Entry]]:
    return {s: [e for e in entries if e.split == s][::stride] for s in ("val", "duts-val")}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


# ------------------------------------------------------------------------------------------ scan


def scan(args, entries: list[Entry]) -> None:
    """Score the default on up to --scan-photos photos of each candidate kind (outside its held-out
    draw when it has enough photos for the measurement, else a strided sample of all of it)."""
    model = onnx_model(args.base, args.threads)
    rows = []
    need = max(args.sizes)
    for kind in candidates(entries, args.data):
        mine = [e for e in entries if kind.matches(e) and e.split not in NEVER_DRAWN]
        try:
            d = draw(kind, entries, args.held_out, need, args.seed)
            sample, basis = d.rest[:args.scan_photos], "outside the held-out draw"
            if len(sample) < args.scan_photos:  # few left over: the training draw's first photos too
                sample += d.train[:args.scan_photos - len(sample)]
            measurable = True
        except ValueError:
            step = max(1, len(mine) // args.scan_photos)
            sample, basis, measurable = mine[::step][:args.scan_photos], "strided over all", False
        if not sample:
            continue
        t0 = time.perf_counter()
        figs = score(model, sample)
        splits = Counter(e.split for e in sample)
        rows.append({"kind": kind.name, "what": kind.what, "photos_of_kind": len(mine), "measurable": measurable,
                     "sample": basis, "sample_splits": dict(splits), **figs})
        print(f"{kind.name:28s} {len(mine):5d} photos  maxF {figs['maxF']:.4f}  wF {figs['wF']:.4f}  "
              f"MAE {figs['MAE']:.4f}  ({len(sample)} scored, {dict(splits)}, {time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r["maxF"])
    out = Path(args.out)
    write_json(out / "scan.json", {"command": " ".join(sys.argv), "base": args.base, "seed": args.seed,
                                   "scan_photos": args.scan_photos, "rows": rows})
    lines = [(f"`{args.base}` on each candidate kind, weakest first (up to {args.scan_photos} photos of the kind "
             "outside its 50 held-out photos; 'measurable': enough photos for 50 held-out + "
             f"{need} training)"), "",
             "| kind | photos | measurable | scored (splits) | maxF | wF | MAE |", "|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        sp = ", ".join(f"{k} {v}" for k, v in r["sample_splits"].items())
        lines.append(f"| {r['kind']} ({r['what']}) | {r['photos_of_kind']} | {'yes' if r['measurable'] else 'no'} | "
                     f"{r['photos']} ({sp}) | {r['maxF']:.4f} | {r['wF']:.4f} | {r['MAE']:.4f} |")
    (out / "scan.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ----------------------------------------------------------------------------------- preparation


def copy_set(entries: list[Entry], folder: Path) -> Path:
    """A fresh ``im/`` + ``gt/`` copy of ``entries`` in ``folder`` (the layout cleancut finetune
    reads; the shared files are only read)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("im", "gt"):
        (tmp / sub).mkdir(parents=True)
    for e in entries:
        shutil.copyfile(e.image, tmp / "im" / f"{e.set}__{e.stem}{Path(e.image).suffix}")
        shutil.copyfile(e.mask, tmp / "gt" / f"{e.set}__{e.stem}{Path(e.mask).suffix}")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def replay_mirror(entries: list[Entry], held: set, folder: Path) -> Path:
    """A dataset root that holds every set of ``entries`` (symlinks to their folders) with a
    ``splits.csv`` of its own: each pair's split, but :data:`HELD_MARK` for the keys ``held``
    (the held-out photos and the other frames of their videos), so that replaying its ``train``
    split never shows the fine-tune a held-out photo or a near-duplicate of one."""
    folder.mkdir(parents=True, exist_ok=True)
    for set_name in sorted({e.set for e in entries}):
        set_dir = Path(next(e.image for e in entries if e.set == set_name)).resolve().parent.parent
        link = folder / set_name
        if link.is_symlink() and link.resolve() != set_dir:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(set_dir, target_is_directory=True)
    rows = ["set,stem,split"] + [f"{e.set},{e.stem},{HELD_MARK if e.key in held else e.split}" for e in entries]
    tmp = folder / "splits.csv.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    os.replace(tmp, folder / "splits.csv")
    return folder


# --------------------------------------------------------------------------- speed, graph, sheet


def latency(base_spec, new_spec, entries: list[Entry], threads: int, rounds: int = 3) -> dict:
    """Median ms a photo of the base and of the new model through the product's session, timed
    photo by photo in turn (so load on the machine slows both alike)."""
    from cleancut.runtime import Session

    if not entries:
        return {}
    sessions = {"base": Session(base_spec, threads=threads), "new": Session(new_spec, threads=threads)}
    photos = [Image.open(e.image).convert("RGB") for e in entries]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        s.predict(photos[:1])
    for r in range(rounds):
        for photo in photos:
            order = list(sessions.items()) if r % 2 == 0 else list(sessions.items())[::-1]
            for key, s in order:
                t0 = time.perf_counter()
                s.predict([photo])
                times[key].append(time.perf_counter() - t0)
    out = {f"{k}_ms": round(1000 * statistics.median(v), 1) for k, v in times.items()}
    out["ratio"] = round(out["new_ms"] / out["base_ms"], 3)
    out["timed"] = f"{len(photos)} photos x {rounds} rounds, interleaved, {threads} thread(s)"
    return out


def same_graph(base_spec, new_spec) -> dict:
    """The operators of both ONNX graphs, counted: the same counts = the same network, as fast."""
    import onnx

    ops = [Counter(n.op_type for n in onnx.load(str(s.path), load_external_data=False).graph.node)
           for s in (base_spec, new_spec)]
    return {"same_operators": ops[0] == ops[1], "nodes": [sum(c.values()) for c in ops],
            "differ": {k: [ops[0][k], ops[1][k]] for k in set(ops[0]) | set(ops[1]) if ops[0][k] != ops[1][k]}}


def sheet_entries(held_out: list[Entry], k: int) -> list[Entry]:
    """``k`` held-out photos for the contact sheet, evenly spaced over the draw (so one a video
    where whole videos are held out)."""
    k = min(k, len(held_out))
    return [held_out[int(i * len(held_out) / k)] for i in range(k)]


def save_alphas(spec, entries: list[Entry], folder: Path, threads: int) -> None:
    """The model's alpha masks (at each photo's size, uint8 PNG): what the contact sheet draws."""
    from cleancut.runtime import Session

    session = Session(spec, threads=threads)
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        alpha = session.predict([Image.open(e.image).convert("RGB")])[0]
        Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)).save(folder / f"{e.set}__{e.stem}.png")


CELL = 150  # contact sheet: width of a cell, px
CAPTION = 16


def _checker(size: tuple[int, int], step: int = 8) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.where(((yy // step) + (xx // step)) % 2 == 0, 200, 150).astype(np.uint8)).convert("RGB")


def _cell(image: Image.Image, caption: str) -> Image.Image:
    thumb = image.copy()
    thumb.thumbnail((CELL, CELL))
    cell = Image.new("RGB", (CELL, CELL + CAPTION), "white")
    cell.paste(thumb, ((CELL - thumb.width) // 2, (CELL - thumb.height) // 2))
    ImageDraw.Draw(cell).text((3, CELL + 2), caption[:26], fill="black")
    return cell


def contact_sheet(kinds: list[Kind], draws: dict, sizes: list[int], out: Path, photos: int) -> Path | None:
    """Per kind, ``photos`` of its held-out photos (:func:`sheet_entries`): the photo, its label, then the default's and
    each fine-tuned model's cut-out over a grey checkerboard with the photo's MAE (from the alpha
    masks the runs saved; a missing run leaves its cell blank)."""
    rows = []
    columns = ["photo", "label", "default"] + [f"{n} photos" for n in sizes]
    for kind in kinds:
        band = Image.new("RGB", (CELL * len(columns), CAPTION + 4), (230, 230, 230))
        ImageDraw.Draw(band).text((4, 3), f"{kind.name}: {kind.what}"[:140], fill="black")
        rows.append(band)
        for e in sheet_entries(draws[kind.name].held_out, photos):
            photo = Image.open(e.image).convert("RGB")
            truth = np.asarray(Image.open(e.mask).convert("L"), np.float32) / 255.0
            cells = [_cell(photo, e.stem), _cell(Image.fromarray((truth * 255).astype(np.uint8)), "label")]
            for label, run in [("default", "base/" + kind.name)] + [(f"{n} photos", f"{kind.name}-{n}") for n in sizes]:
                path = out / "runs" / run / "alpha" / f"{e.set}__{e.stem}.png"
                if not path.is_file():
                    cells.append(_cell(Image.new("RGB", photo.size, "white"), f"{label}: not run"))
                    continue
                alpha = np.asarray(Image.open(path), np.float32) / 255.0
                mae = float(np.abs(alpha - (truth >= 0.5)).mean())
                mask = Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
                cells.append(_cell(Image.composite(photo, _checker(photo.size), mask), f"{label} MAE {mae:.3f}"))
            row = Image.new("RGB", (CELL * len(columns), CELL + CAPTION), "white")
            for k, cell in enumerate(cells):
                row.paste(cell, (k * CELL, 0))
            rows.append(row)
    if not rows:
        return None
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    path = out / "sheet.jpg"
    sheet.save(path, quality=88)
    return path


# ----------------------------------------------------------------------------------------- runs


def baseline(args, kinds, draws, forget, out: Path) -> dict:
    """The base's figures on val / duts-val and each kind's held-out photos (kept in
    baseline.json; a kind whose held-out photos changed is scored again), and its alphas for
    the sheet."""
    from cleancut.models import get_model

    path = out / "baseline.json"
    data = read_json(path) or {}
    spec = get_model(args.base)
    want = {"base": args.base, "sha256": spec.sha256, "stride": args.stride}
    if data.get("config") != want:
        data = {"config": want, "forgetting": {}, "kinds": {}}
    model = None
    for split, part in forget.items():
        if split not in data["forgetting"]:
            model = model or onnx_model(spec, args.threads)
            data["forgetting"][split] = score(model, part)
            write_json(path, data)
    for kind in kinds:
        stems = [f"{e.set}/{e.stem}" for e in draws[kind.name].held_out]
        if data["kinds"].get(kind.name, {}).get("stems") != stems:
            model = model or onnx_model(spec, args.threads)
            data["kinds"][kind.name] = {"stems": stems, "figures": score(model, draws[kind.name].held_out)}
            write_json(path, data)
        alphas = out / "runs" / "base" / kind.name / "alpha"
        held = draws[kind.name].held_out
        if not all((alphas / f"{e.set}__{e.stem}.png").is_file() for e in held):
            save_alphas(spec, held, alphas, args.threads)
    return data


def run_one(args, kind: Kind, n: int, d: Draw, forget, entries, out: Path) -> dict:
    """One fine-tune of ``kind`` on ``n`` photos, scored; resumes from what is on disk."""
    from cleancut.models import get_model, user_models
    from cleancut.models.user import remove_user_model
    from cleancut.train.finetune import finetune

    name = f"teach-{kind.name}-{n}"
    folder = out / "runs" / f"{kind.name}-{n}"
    config = {"base": args.base, "minutes": args.minutes, "seed": args.seed, "threads": args.threads,
              "stride": args.stride, "train": [f"{e.set}/{e.stem}" for e in d.train[:n]],
              "held_out": [f"{e.set}/{e.stem}" for e in d.held_out]}
    done = read_json(folder / "result.json")
    if done and done.get("config") == config:
        print(f"{name}: done already ({folder / 'result.json'})", file=sys.stderr)
        return done
    ft = read_json(folder / "finetune.json")
    if ft is None or ft.get("config") != config or name not in user_models():
        data = copy_set(d.train[:n], out / "sets" / kind.name / f"train-{n}")
        mirror = replay_mirror(entries, d.excluded, out / "replay" / kind.name)
        print(f"{name}: cleancut finetune {data} --name {name} --minutes {args.minutes:g} --threads {args.threads} "
              f"--seed {args.seed} --replay {mirror}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        res = finetune(data, name, base=args.base, minutes=args.minutes, replay_roots=[str(mirror)], replace=True,
                       threads=args.threads, seed=args.seed)
        wall = (time.perf_counter() - t0) / 60
        print(res["table"], file=sys.stderr)
        ft = {"config": config, "wall_minutes": round(wall, 2),
              **{k: v for k, v in res.items() if k not in ("table", "spec")}}
        write_json(folder / "finetune.json", ft)
    base_spec, spec = get_model(args.base), get_model(name)
    model = onnx_model(spec, args.threads)
    print(f"{name}: scoring on {len(d.held_out)} held-out photos and on "
          + ", ".join(f"{k} ({len(v)})" for k, v in forget.items()), file=sys.stderr, flush=True)
    result = {"config": config, "kind": kind.name, "photos": n, "model": name, "finetune": ft,
              "held_out": score(model, d.held_out),
              "forgetting": {split: score(model, part) for split, part in forget.items()},
              "latency": latency(base_spec, spec, d.held_out[:args.speed_photos], args.threads),
              "graph": same_graph(base_spec, spec)}
    save_alphas(spec, d.held_out, folder / "alpha", args.threads)  # every held-out photo: any can go on the sheet
    write_json(folder / "result.json", result)
    if not args.keep_models:
        remove_user_model(name)
    return result


def report(args, kinds, draws, base, results, out: Path) -> str:
    """teach.md: per kind the default and each fine-tune on the held-out photos and val / duts-val."""
    n_forget = {k: v["photos"] for k, v in base["forgetting"].items()}
    lines = [(f"`{args.base}` fine-tuned by `cleancut finetune --minutes {args.minutes:g} --threads {args.threads}` "
             f"(seed {args.seed}) on {', '.join(map(str, args.sizes))} photos of each kind. maxF / wF / MAE of the int8 models as "
             f"`cleancut evaluate` scores them on {args.held_out} held-out photos of the kind, and maxF on "
             f"every {args.stride}th photo of `val` ({n_forget.get('val')}) and `duts-val` "
             f"({n_forget.get('duts-val')}); changes against the default in brackets. Minutes: the whole "
             "`finetune` call (training, export, int8, its own before/after figures). Latency: median ms a photo, "
             "interleaved with the default on the same photos."), "",
             (f"| kind | model | held-out ({args.held_out}): maxF / wF / MAE | `val` maxF | `duts-val` maxF | minutes "
             "| epochs (best) | ms: new / default |"),
             "|---|---|---|---|---|---:|---|---|"]

    def change(new, old, digits=4):
        return f"{new:.{digits}f} ({new - old:+.{digits}f})"

    for kind in kinds:
        b = base["kinds"][kind.name]["figures"]
        bf = base["forgetting"]
        lines.append(f"| {kind.name} | default | {b['maxF']:.4f} / {b['wF']:.4f} / {b['MAE']:.4f} | "
                     f"{bf['val']['maxF']:.4f} | {bf['duts-val']['maxF']:.4f} | | | |")
        for n in args.sizes:
            r = results.get((kind.name, n))
            if r is None:
                lines.append(f"| {kind.name} | {n} photos | not run | | | | | |")
                continue
            h, f, ft, lat = r["held_out"], r["forgetting"], r["finetune"], r["latency"]
            ms = f"{lat['new_ms']:.0f} / {lat['base_ms']:.0f}" if lat else ""
            lines.append(f"| {kind.name} | {n} photos | {change(h['maxF'], b['maxF'])} / {change(h['wF'], b['wF'])} / "
                         f"{change(h['MAE'], b['MAE'])} | {change(f['val']['maxF'], bf['val']['maxF'])} | "
                         f"{change(f['duts-val']['maxF'], bf['duts-val']['maxF'])} | {ft['minutes']:.1f} | "
                         f"{ft['epochs']} ({ft['best_epoch']}) | {ms} |")
    goal = 20 if 20 in args.sizes else args.sizes[0]
    lines += ["", (f"The goal with {goal} photos and {args.minutes:g} minutes (held-out maxF up by at least 0.05; `val` "
              "and `duts-val` maxF down by at most 0.005; as fast as the default):"), "",
              ("| kind | held-out maxF change | `val` change | `duts-val` change | minutes | latency new / default "
              "| met |"), "|---|---:|---:|---:|---:|---:|---|"]
    for kind in kinds:
        r = results.get((kind.name, goal))
        if r is None:
            continue
        b, bf = base["kinds"][kind.name]["figures"], base["forgetting"]
        up = r["held_out"]["maxF"] - b["maxF"]
        down = {s: r["forgetting"][s]["maxF"] - bf[s]["maxF"] for s in ("val", "duts-val")}
        ratio = r["latency"].get("ratio")
        met = up >= 0.05 and min(down.values()) >= -0.005 and r["finetune"]["minutes"] <= args.minutes * 1.05 \
            and r["graph"]["same_operators"]
        lines.append(f"| {kind.name} | {up:+.4f} | {down['val']:+.4f} | {down['duts-val']:+.4f} | "
                     f"{r['finetune']['minutes']:.1f} | {ratio if ratio is not None else ''} | {'yes' if met else 'no'} |")
    lines += ["", "Kinds:"]
    for kind in kinds:
        splits = Counter(e.split for e in draws[kind.name].held_out)
        lines.append(f"- **{kind.name}**: {kind.what}; held-out photos from "
                     + ", ".join(f"{k} ({v})" for k, v in splits.items())
                     + f", training photos from {', '.join(kind.train_splits)}." + (f" {kind.note}." if kind.note else ""))
    same = all(r["graph"]["same_operators"] for r in results.values())
    lines.append(f"\nEvery fine-tuned model has the default's graph (the same operators, counted): {same}.")
    text = "\n".join(lines) + "\n"
    (out / "teach.md").write_text(text)
    return text


# ------------------------------------------------------------------------------------------- main


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=["../shared/data", "datasets"], help="dataset roots (read only)")
    p.add_argument("--kinds", nargs="+", default=None, help=f"kinds to measure (default: {' '.join(KINDS)})")
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 20, 50], help="photos to fine-tune on (nested)")
    p.add_argument("--held-out", type=int, default=50, help="held-out photos of each kind")
    p.add_argument("--minutes", type=float, default=10.0, help="cleancut finetune --minutes")
    p.add_argument("--stride", type=int, default=4, help="every k-th photo of val and duts-val")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=34, help="seed of the draws and of finetune")
    p.add_argument("--base", default="cleancut-default")
    p.add_argument("--sheet-photos", type=int, default=4, help="held-out photos of each kind on the contact sheet")
    p.add_argument("--speed-photos", type=int, default=8, help="photos timed for the latency comparison (0: none)")
    p.add_argument("--keep-models", action="store_true", help="leave the fine-tuned models in OUT/models")
    p.add_argument("--scan", action="store_true", help="only score the default on the candidate kinds")
    p.add_argument("--scan-photos", type=int, default=100, help="photos of each kind --scan scores")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "teach"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    args.sizes = sorted(set(args.sizes))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the fine-tuned models go to a throwaway folder, never the user's own
    os.environ["CLEANCUT_MODELS_DIR"] = str(out / "models")
    entries = catalogue(args.data)
    if args.scan:
        scan(args, entries)
        return 0
    unknown = [k for k in args.kinds or [] if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    kinds = [KINDS[k] for k in args.kinds or KINDS]
    draws = {k.name: draw(k, entries, args.held_out, max(args.sizes), args.seed) for k in kinds}
    forget = forgetting_sets(entries, args.stride)
    empty = [k for k, v in forget.items() if not v]
    if empty:
        raise SystemExit(f"no {' or '.join(empty)} photos under --data {' '.join(args.data)}")
    write_json(out / "draws.json", {k: {"held_out": [asdict(e) for e in d.held_out], "train": [asdict(e) for e in d.train]}
                                    for k, d in draws.items()})
    t0 = time.perf_counter()
    base = baseline(args, kinds, draws, forget, out)
    results = {}
    for kind in kinds:
        for n in args.sizes:
            results[(kind.name, n)] = run_one(args, kind, n, draws[kind.name], forget, entries, out)
    text = report(args, kinds, draws, base, results, out)
    sheet = contact_sheet(kinds, draws, args.sizes, out, args.sheet_photos)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine

    write_json(out / "teach.json", {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
                                    "args": vars(args), "kinds": {k.name: asdict(k) for k in kinds},
                                    "baseline": base, "runs": list(results.values()),
                                    "wall_minutes_this_call": round((time.perf_counter() - t0) / 60, 1)})
    print(text)
    print(f"wrote {out / 'teach.md'}, {out / 'teach.json'}, {sheet}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
