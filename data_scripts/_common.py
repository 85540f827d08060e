"""What every ``prepare_<dataset>.py`` shares: the command line, resumable atomic conversion, the lists.

A script finds its raw files and checks the layout and the counts, then hands a list of :class:`Item` per
output list to :func:`prepare`, which

1. refuses a folder written with other settings (``prepare.json``) and, without ``--resume``, any folder that
   already exists, so nothing written before is ever overwritten by surprise;
2. skips every item whose outputs are complete (right size and mode, PNG ending intact), not merely present;
3. reads the header of every remaining raw file (decodable, label size = image size) before writing anything;
4. converts them, in ``--workers`` processes: image resized bilinearly, every label pixel checked against the
   dataset's id table, mapped to the 19 train ids, resized with nearest; each file goes to ``.partial/`` first
   and is renamed into place, so an interrupted run never leaves half a file under a real name;
5. writes the lists last, and only when every item succeeded: a list never names a file that is not there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from udalib.data.check import DATASETS, SETTINGS_FILE, check_dataset, format_report
from udalib.data.labels import LabelError, encode_labels

PARTIAL = ".partial"  # temporary files of the running conversion, inside the dataset folder
LOCK = ".prepare.lock"  # held while a run writes the dataset folder (flock: dropped when its process dies)
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every complete PNG
MAX_SHOWN = 10


class PrepareError(Exception):
    """The raw download or the output folder is not as expected; the message says what to do."""


@dataclass(frozen=True)
class Item:
    """One image to convert, with its label when it has one. ``out_*`` are relative to the dataset folder."""

    image: Path
    label: Path | None
    out_image: str
    out_label: str | None = None
    keep_size: bool = False  # full resolution: the image copied as is, the label at the image's size

    def line(self) -> str:
        """Its line in a list file: ``image [label]``."""
        return self.out_image if self.out_label is None else f"{self.out_image} {self.out_label}"


@dataclass(frozen=True)
class Converter:
    """How one dataset's raw files become prepared ones. Picklable, so ``--workers`` processes can use it."""

    read_label: Callable[[Path], np.ndarray]  # raw label file -> (H, W) integer array of dataset ids
    table: np.ndarray  # dataset id -> 19-class train id (udalib.data.labels)
    source: str  # key of udalib.data.labels.VALID_IDS: ids outside it are errors
    size: tuple[int, int]  # (W, H) of the outputs (items with keep_size stay at their native size)
    resize_mismatched: bool = False  # GTA5: a label whose size differs from its image's is resized on its own


# --------------------------------------------------------------------------------------------- command line
def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every script takes; a script adds its own."""
    spec = DATASETS[name]
    p = argparse.ArgumentParser(prog=f"python {spec.script}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", required=True, type=Path, help=f"{spec.raw} (the download, read only)")
    p.add_argument("--out", required=True, type=Path, help=f"DATA_ROOT: writes DATA_ROOT/{name}/")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: finished files are checked and kept, the rest converted")
    p.add_argument("--size", type=parse_size, default=spec.size, metavar="WxH",
                   help=f"size of the prepared images and labels (default {spec.size[0]}x{spec.size[1]}, "
                        "as the seeds)")
    p.add_argument("--partial", action="store_true",
                   help="convert an incomplete download (counts then differ from the papers')")
    p.add_argument("--workers", type=int, default=1, help="conversion processes")
    return p


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (width first, as the seeds' ``--crop_size``)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's ``main``; bad input ends with one ``error:`` line and exit status 2, no traceback."""
    try:
        return main(argv)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command with --resume to continue",
              file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------- raw checks
def require_dirs(raw: Path, *relative: str, what: str) -> None:
    """Every ``raw/<relative>`` must be a folder; else say which one is missing and where ``--raw`` points."""
    if not raw.is_dir():
        raise PrepareError(f"--raw {raw} does not exist; point it at {what}")
    missing = [r for r in relative if not (raw / r).is_dir()]
    if missing:
        present = sorted(p.name for p in raw.iterdir() if p.is_dir())[:MAX_SHOWN]
        raise PrepareError(f"{raw} has no {', '.join(m + '/' for m in missing)} folder; --raw must be {what} "
                           f"(folders found there: {', '.join(present) or 'none'}); re-extract the download if "
                           "a folder is absent")


def check_count(found: int, expected: int, what: str, partial_ok: bool, fix: str) -> str | None:
    """A count that differs from the complete download is an error unless ``--partial``; then it is a note."""
    if found == expected:
        return None
    message = f"{what}: found {found}, the complete download has {expected}"
    if not partial_ok:
        raise PrepareError(f"{message}; {fix}, or pass --partial to convert what is there")
    return message


def check_pairs(items: Iterable[Item], resize_mismatched: bool = False) -> list[str]:
    """Read the headers of every raw image and label: each must decode, and a label must match its image's size.

    Returns notes (GTA5: pairs of different sizes, resized on their own as the seeds do); raises
    :class:`PrepareError` listing the first bad files otherwise.
    """
    errors, mismatched = [], []
    for item in items:
        try:
            with Image.open(item.image) as im:
                size = im.size
            if item.label is not None:
                with Image.open(item.label) as lab:
                    if lab.size != size:
                        mismatched.append(f"{item.label}: label {lab.size[0]}x{lab.size[1]}, image "
                                          f"{size[0]}x{size[1]}")
        except FileNotFoundError as exc:
            errors.append(f"{exc.filename} is missing")
        except OSError as exc:
            errors.append(f"{item.image} / {item.label}: cannot be read ({exc})")
    if mismatched and not resize_mismatched:
        errors += mismatched
    if errors:
        raise PrepareError(f"{len(errors)} raw files are bad, e.g.:\n  " + "\n  ".join(errors[:MAX_SHOWN])
                           + "\nre-extract them from the download (this run wrote nothing)")
    return [f"{len(mismatched)} labels differ in size from their image and are resized on their own, e.g. "
            f"{mismatched[0]}"] if mismatched else []


def read_label_ids(path: Path) -> np.ndarray:
    """A single-channel label PNG of raw dataset ids (GTA5's palette PNGs, Cityscapes ``*_labelIds.png``)."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise LabelError(f"{path}: a {im.mode} image, expected single-channel label ids; colour renderings "
                             "(*_color.png) cannot be converted: use the label-id files")
        return np.asarray(im)


# --------------------------------------------------------------------------------------------- atomic files
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # what open() would give: mkstemp's own 0600 would hide the data from other users


def write_atomic(path: Path, write: Callable[[Path], None], partial_dir: Path) -> None:
    """``write`` into a temporary file in ``partial_dir``, then rename it to ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=partial_dir, suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: Path, text: str, partial_dir: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text), partial_dir)


def is_complete(path: Path, size: tuple[int, int] | None, mode: str) -> bool:
    """A finished output: a PNG header of the right size (None: any) and mode, and its final chunk intact.

    Cheap enough for every file of a resumed run (it reads the header and the last 12 bytes). Outputs are renamed
    into place complete, so what this catches is a file damaged afterwards, e.g. by a copy cut short.
    """
    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.mode != mode or (size is not None and im.size != size):
                return False
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except (OSError, ValueError):
        return False


def is_done(item: Item, root: Path, size: tuple[int, int]) -> bool:
    """Both outputs of ``item`` are complete, and its label has its image's size."""
    image = root / item.out_image
    if not is_complete(image, None if item.keep_size else size, "RGB"):
        return False
    if item.out_label is None:
        return True
    with Image.open(image) as im:
        image_size = im.size
    return is_complete(root / item.out_label, image_size, "L")


# --------------------------------------------------------------------------------------------- conversion
def convert_label(item: Item, converter: Converter, image_size: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """Raw label -> train-id ``L`` image of ``size`` (W, H). Every raw pixel is checked, before any resize."""
    raw = converter.read_label(item.label)
    if raw.ndim != 2:
        raise LabelError(f"{item.label}: expected a single-channel label, got an array of shape {raw.shape}")
    if raw.shape[::-1] != image_size and not converter.resize_mismatched:
        raise LabelError(f"{item.label}: label is {raw.shape[1]}x{raw.shape[0]}, its image {image_size[0]}x"
                         f"{image_size[1]}; re-extract the pair from the download")
    try:
        train_ids = encode_labels(raw, converter.table, source=converter.source)
    except LabelError as exc:
        raise LabelError(f"{item.label}: {exc}") from None
    label = Image.fromarray(train_ids, mode="L")
    return label if label.size == size else label.resize(size, Image.NEAREST)


def convert_item(item: Item, converter: Converter, root: Path) -> str | None:
    """Write ``item``'s prepared image and label; returns an error message instead of raising.

    Both outputs are computed in memory first, so a bad label leaves neither file behind.
    """
    partial_dir = root / PARTIAL
    try:
        with Image.open(item.image) as im:
            native = im.size
            image = None if item.keep_size else im.convert("RGB")
        size = native if item.keep_size else converter.size
        if image is not None and image.size != size:
            image = image.resize(size, Image.BILINEAR)
        label = convert_label(item, converter, native, size) if item.label is not None else None
        if image is None:  # full resolution: keep the download's pixels exactly
            write_atomic(root / item.out_image, lambda tmp: _copy_as_rgb_png(item.image, tmp), partial_dir)
        else:
            write_atomic(root / item.out_image, lambda tmp: image.save(tmp, format="PNG"), partial_dir)
        if label is not None:
            write_atomic(root / item.out_label, lambda tmp: label.save(tmp, format="PNG"), partial_dir)
    except LabelError as exc:  # its message names the label file
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"{item.image}: {exc}"
    return None


def _copy_as_rgb_png(src: Path, dst: Path) -> None:
    """Copy an RGB PNG byte for byte; anything else (JPEG, RGBA, 16-bit) is re-encoded as an RGB PNG."""
    with Image.open(src) as im:
        if im.format == "PNG" and im.mode == "RGB":
            shutil.copyfile(src, dst)
        else:
            im.convert("RGB").save(dst, format="PNG")


def _map(func: Callable[[Item], str | None], items: list[Item], workers: int) -> Iterator[tuple[Item, str | None]]:
    if workers <= 1:
        for item in items:
            yield item, func(item)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from zip(items, pool.imap(func, items, chunksize=4))


# --------------------------------------------------------------------------------------------- the run
# Settings that change the content of the files: a resumed run must use the same ones.
FILE_SETTINGS = {"image_interpolation": "bilinear", "label_interpolation": "nearest",
                 "label_encoding": "19 Cityscapes train ids, 255 = ignore"}


@dataclass
class Summary:
    """What :func:`prepare` did."""

    converted: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def _check_output(folder: Path, settings: dict, resume: bool) -> dict:
    """Refuse an existing ``folder`` unless resuming one written with the same settings; returns its record."""
    if not folder.exists():
        return {}
    if all(p.name in (PARTIAL, LOCK, LOCK + ".owner") for p in folder.iterdir()):
        # only our own temporary folder: a run killed right after creating the output folder, before it recorded
        # anything. Nothing of value is there (we hold the lock, so no live run writes it): start afresh.
        shutil.rmtree(folder / PARTIAL, ignore_errors=True)
        return {}
    if not resume:
        raise PrepareError(f"{folder} already exists; pass --resume to continue it (finished files are kept), "
                           "or give another --out")
    path = folder / SETTINGS_FILE
    try:
        before = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise PrepareError(f"{folder} exists but has no readable {SETTINGS_FILE}: it was not written by this "
                           "script; give another --out") from None
    changed = [f"{k}: was {before.get(k)}, now {v}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        raise PrepareError(f"{folder} was prepared with other settings ({'; '.join(changed)}); resume with "
                           "the same options, or give another --out")
    return before


def prepare(out: Path, name: str, lists: dict[str, list[Item]], converter: Converter, *, info: dict | None = None,
            resume: bool = False, workers: int = 1, notes: Iterable[str] = (), progress: bool = True) -> Summary:
    """Convert every item of ``lists`` into ``out/<name>/`` and write ``lists/<list>.txt`` (module docstring).

    ``info`` is recorded in ``prepare.json`` (e.g. the split used); the size and encodings are recorded and a
    resumed run must match them. Raises :class:`PrepareError` before writing anything when the output folder or
    a raw file is wrong, and after converting everything else when some items failed (then no list is written).
    """
    from udalib import locks

    folder = Path(out) / name
    settings = {"dataset": name, "size": list(converter.size)} | FILE_SETTINGS
    if (folder / LOCK).exists():  # a second run into the same folder: told who writes it, before anything else
        with locks.hold(folder / LOCK, what=f"{folder}", hint="wait for that run to finish, or give another --out"):
            pass
    before = _check_output(folder, settings, resume)
    summary = Summary(notes=list(notes))
    unique = list({item.out_image: item for items in lists.values() for item in items}.values())
    todo = [item for item in unique if not (before and is_done(item, folder, converter.size))]
    summary.skipped = len(unique) - len(todo)
    summary.notes += check_pairs(todo, converter.resize_mismatched)  # raises before anything is written

    folder.mkdir(parents=True, exist_ok=True)
    with locks.hold(folder / LOCK, what=f"{folder}", hint="wait for that run to finish, or give another --out"):
        if not before and _has_foreign_files(folder):  # another run created it since our check
            raise PrepareError(f"{folder} was created by another run meanwhile; run again with --resume")
        return _convert(folder, name, lists, converter, settings, before, todo, summary, workers, progress, info)


def _has_foreign_files(folder: Path) -> bool:
    return any(p.name not in (PARTIAL, LOCK, LOCK + ".owner") for p in folder.iterdir())


def _convert(folder: Path, name: str, lists: dict[str, list[Item]], converter: Converter, settings: dict,
             before: dict, todo: list[Item], summary: Summary, workers: int, progress: bool,
             info: dict | None) -> Summary:
    shutil.rmtree(folder / PARTIAL, ignore_errors=True)  # our own leftovers of an interrupted run (we hold the lock)
    (folder / PARTIAL).mkdir(parents=True)
    record = settings | {"info": before.get("info", {}) | (info or {}), "lists": before.get("lists", {}),
                         "finished": False}
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(record, indent=1), folder / PARTIAL)

    results = _map(partial(convert_item, converter=converter, root=folder), todo, workers)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(todo), desc=f"{name}: converting", unit="image")
    errors = [error for _, error in results if error is not None]
    summary.converted = len(todo) - len(errors)
    if errors:
        shutil.rmtree(folder / PARTIAL, ignore_errors=True)
        raise PrepareError(f"{len(errors)} of {len(todo)} items failed; no list was written, the "
                           f"{summary.converted + summary.skipped} finished items are kept:\n  "
                           + "\n  ".join(errors[:MAX_SHOWN])
                           + "\nfix or re-extract those raw files, then run again with --resume")
    for list_name, items in lists.items():
        write_text_atomic(folder / "lists" / f"{list_name}.txt", "".join(i.line() + "\n" for i in items),
                          folder / PARTIAL)
    record |= {"lists": record["lists"] | {k: len(v) for k, v in lists.items()}, "notes": summary.notes,
               "finished": True}
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(record, indent=1), folder / PARTIAL)
    shutil.rmtree(folder / PARTIAL, ignore_errors=True)
    return summary


def report(out: Path, name: str, summary: Summary) -> None:
    """Print what was done and the check of the prepared folder (the same as ``python -m udalib data check``)."""
    print(f"{name}: {summary.converted} converted, {summary.skipped} already finished (kept)")
    for note in summary.notes:
        print(f"note: {note}")
    print(format_report([check_dataset(out, name)]))
