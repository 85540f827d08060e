"""Prepare SYNTHIA-RAND-CITYSCAPES (Ros et al. 2016) for udalib.

Raw layout (``RAND_CITYSCAPES`` extracted)::

    RAW/RGB/0000000.png ... 0009399.png         1280x760 RGB
    RAW/GT/LABELS/0000000.png ...               16-bit PNG, 3 or 4 channels: class id in the first, instance
                                                id in the second

Prepared (DATA_ROOT/synthia/): ``images/%07d.png``, ``labels/%07d.png`` (train ids) at 1280x760, the native size
(MaxSquare's README and UDAclustering; MaxSquare's script default was 1280x720); ``lists/synthia_train.txt``
(images 0-8999) and ``lists/synthia_val.txt`` (9000-9399), MaxSquare's split. Terrain, truck and train do not
occur in SYNTHIA; 16-class runs map the stored 19-class ids on load (``class_set="16"``).

Pillow reads a 16-bit colour PNG as 8 bits per channel (the high byte, which is 0 for every class id), so the
labels are decoded twice, once for the high and once for the low bytes (:func:`read_synthia_label`).

    python data_scripts/prepare_synthia.py --raw /downloads/RAND_CITYSCAPES --out /data/prepared
"""

from __future__ import annotations

import struct
import sys
import zlib
from functools import cache
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from udalib.data.labels import SYNTHIA_ID_TO_TRAINID, LabelError

from _common import Converter, Item, PrepareError, check_count, parser, prepare, report, require_dirs, run_main

NAME = "synthia"
NUM_IMAGES = 9400
NUM_TRAIN = 9000  # MaxSquare: train = 0..8999, val = 9000..9399
_SINGLE_CHANNEL = ("L", "P", "I", "I;16", "I;16B", "I;16L")


def _decode(source: Path | BytesIO, byte: str) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG keeping the ``"high"`` or the ``"low"`` byte of every sample."""
    with Image.open(source) as im:
        tile = im.tile[0]
        rawmode = tile.args if isinstance(tile.args, str) else tile.args[0]
        if not rawmode.endswith(";16B"):
            raise LabelError(f"{source}: expected a 16-bit PNG, Pillow reads it as {rawmode}")
        if byte == "low":  # the same unfiltering (48 or 64 bits per pixel), the other byte of each sample
            low = rawmode.replace(";16B", ";16L")
            im.tile = [tile._replace(args=low if isinstance(tile.args, str) else (low, *tile.args[1:]))]
        return np.asarray(im)


def _png16(rgb: tuple[int, int, int]) -> bytes:
    """A 1x1 16-bit RGB PNG, for the self-test below."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" + struct.pack(">HHH", *rgb))) + chunk(b"IEND", b""))


@cache
def _check_pillow() -> None:
    """Refuse to convert if this Pillow does not give back every bit of a 16-bit sample."""
    value = (0x0102, 0x0304, 0x0506)
    try:
        high, low = (_decode(BytesIO(_png16(value)), b)[0, 0, :3].astype(int) for b in ("high", "low"))
        ok = list(high * 256 + low) == list(value)
    except (LabelError, OSError, AttributeError, TypeError):
        ok = False
    if not ok:
        raise PrepareError(f"this Pillow ({Image.__version__}) cannot be made to read 16-bit colour PNGs exactly; "
                           "install pillow>=10,<14 in this environment to convert SYNTHIA's labels")


def read_synthia_label(path: Path) -> np.ndarray:
    """Class ids of a ``GT/LABELS`` PNG: the first channel, all 16 bits of it.

    Shape: ``(H, W)`` uint16 (single-channel label files are read as they are).
    """
    with Image.open(path) as im:
        mode = im.mode
    if mode in _SINGLE_CHANNEL:
        with Image.open(path) as im:
            return np.asarray(im)
    if mode not in ("RGB", "RGBA"):
        raise LabelError(f"{path}: a {mode} image; expected SYNTHIA's 16-bit GT/LABELS PNG")
    _check_pillow()
    try:
        high = _decode(path, "high")[..., 0]
    except LabelError:
        raise LabelError(f"{path}: an 8-bit colour PNG; expected the 16-bit GT/LABELS file (GT/COLOR holds "
                         "colour renderings, which cannot be converted)") from None
    return (high.astype(np.uint16) << 8) | _decode(path, "low")[..., 0]


def find_items(raw: Path, partial: bool) -> tuple[dict[str, list[Item]], list[str]]:
    """The train and val lists of the copy under ``raw``; a broken copy is an error unless ``partial``."""
    require_dirs(raw, "RGB", "GT/LABELS", what="the RAND_CITYSCAPES folder holding RGB/ and GT/LABELS/")
    images = {int(p.stem) for p in (raw / "RGB").glob("*.png") if p.stem.isdigit()}
    labels = {int(p.stem) for p in (raw / "GT" / "LABELS").glob("*.png") if p.stem.isdigit()}
    if not images:
        raise PrepareError(f"{raw}/RGB has no numbered PNG files (0000000.png ...); extract RAND_CITYSCAPES there")
    notes = []
    unpaired = sorted(images ^ labels)
    if unpaired:
        message = f"{len(unpaired)} images lack their label or labels their image, e.g. {unpaired[0]:07d}.png"
        if not partial:
            raise PrepareError(f"{message}; re-extract the archive, or pass --partial to skip them")
        notes.append(message + " (skipped)")
    ids = sorted(images & labels)
    note = check_count(len(ids), NUM_IMAGES, "image/label pairs", partial, "re-extract RAND_CITYSCAPES")
    notes += [note] if note else []

    def item(n: int) -> Item:
        name = f"{n:07d}.png"
        return Item(raw / "RGB" / name, raw / "GT" / "LABELS" / name, f"images/{name}", f"labels/{name}")

    lists = {"synthia_train": [item(n) for n in ids if n < NUM_TRAIN],
             "synthia_val": [item(n) for n in ids if n >= NUM_TRAIN]}
    return {k: v for k, v in lists.items() if v}, notes


def main(argv: list[str] | None = None) -> int:
    args = parser(NAME, __doc__).parse_args(argv)
    _check_pillow()
    lists, notes = find_items(args.raw, args.partial)
    converter = Converter(read_synthia_label, SYNTHIA_ID_TO_TRAINID, "synthia", args.size)
    summary = prepare(args.out, NAME, lists, converter, info={"raw": str(args.raw)}, resume=args.resume,
                      workers=args.workers, notes=notes)
    report(args.out, NAME, summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
