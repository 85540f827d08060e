"""Prepare GTA5 ("Playing for Data", Richter et al. 2016) for udalib.

Raw layout (the ten image and label zips extracted into one folder)::

    RAW/images/00001.png ... 24966.png      1914x1052 RGB
    RAW/labels/00001.png ... 24966.png      palette PNGs whose indices are Cityscapes labelIds

Prepared (DATA_ROOT/gta5/): ``images/%05d.png`` (1280x720, bilinear), ``labels/%05d.png`` (train ids, nearest),
``lists/gta5_all.txt`` (every pair) and, with ``--split``, ``lists/gta5_{train,val,test}.txt``: MaxSquare's
``gta5_list`` (train 12 403 / val 6 382 / test 6 181), the official split of ``read_mapping.zip``. The split is
a folder of ``train.txt``/``val.txt``/``test.txt`` (one image number per line) or the official ``split.mat``.
``--train-on-all`` makes ``gta5_train`` every image instead (AdaptSegNet and MLSL train on all 24 966).

    python data_scripts/prepare_gta5.py --raw /downloads/GTA5 --out /data/prepared --split /downloads/split.mat
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from udalib.data.labels import GTA5_ID_TO_TRAINID

from _common import (
    Converter,
    Item,
    PrepareError,
    check_count,
    parser,
    prepare,
    read_label_ids,
    report,
    require_dirs,
    run_main,
)

NAME = "gta5"
NUM_IMAGES = 24966
SPLITS = ("train", "val", "test")
_NUMBERED = re.compile(r"(\d+)(?:\.png)?$")


# ------------------------------------------------------------------------------------------- the split
def read_split(path: Path) -> dict[str, list[int]]:
    """``{"train": [1, 2, ...], "val": ..., "test": ...}`` (image numbers) from a folder of txt lists or split.mat."""
    if path.is_dir():
        found = {s: path / f"{s}.txt" for s in SPLITS if (path / f"{s}.txt").is_file()}
        if not found:
            raise PrepareError(f"--split {path} holds none of train.txt, val.txt, test.txt")
        return {s: _numbers(p) for s, p in found.items()}
    if path.suffix == ".mat" and path.is_file():
        arrays = read_mat(path)
        split = {s: [int(v) for v in a.ravel()] for name, a in arrays.items()
                 for s in SPLITS if name.lower().startswith(s)}
        if not split:
            raise PrepareError(f"{path} holds no trainIds/valIds/testIds (variables found: {', '.join(arrays)})")
        return split
    raise PrepareError(f"--split {path} is neither a folder of train/val/test.txt nor a split.mat file")


def _numbers(path: Path) -> list[int]:
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _NUMBERED.search(line.strip().split("/")[-1])
        if not match:
            raise PrepareError(f"{path}, line {i}: expected an image number such as 00001 or 00001.png, got {line!r}")
        out.append(int(match.group(1)))
    return out


_MAT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MAT_MATRIX, _MAT_COMPRESSED = 14, 15
_MAT_NUMERIC_CLASSES = range(6, 16)  # double, single, int8 ... uint64


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """The numeric variables of a MATLAB level-5 ``.mat`` file (what ``split.mat`` is), without scipy."""
    data = path.read_bytes()
    if data.startswith(b"MATLAB 7.3"):
        raise PrepareError(f"{path} is a MATLAB 7.3 (HDF5) file; save it with -v7, or pass txt lists to --split")
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise PrepareError(f"{path} is not a MATLAB .mat file")
    endian = "<" if data[126:128] == b"IM" else ">"
    out = {}
    for dtype, payload in _mat_elements(data[128:], endian):
        if dtype == _MAT_COMPRESSED:
            dtype, payload = next(_mat_elements(zlib.decompress(payload), endian))
        if dtype == _MAT_MATRIX:
            name, values = _mat_matrix(payload, endian)
            if values is not None:
                out[name] = values
    return out


def _mat_elements(data: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 8 <= len(data):
        first, second = struct.unpack_from(endian + "II", data, pos)
        if first >> 16:  # "small element": type and size share one word, data in the next four bytes
            yield first & 0xFFFF, data[pos + 4:pos + 4 + (first >> 16)]
            pos += 8
        else:
            yield first, data[pos + 8:pos + 8 + second]
            pos += 8 + second + (0 if first == _MAT_COMPRESSED else -second % 8)


def _mat_matrix(payload: bytes, endian: str) -> tuple[str, np.ndarray | None]:
    parts = list(_mat_elements(payload, endian))
    mx_class = struct.unpack_from(endian + "I", parts[0][1])[0] & 0xFF
    name = parts[2][1].decode("latin-1")
    if mx_class not in _MAT_NUMERIC_CLASSES or len(parts) < 4 or parts[3][0] not in _MAT_TYPES:
        return name, None
    dims = np.frombuffer(parts[1][1], endian + "i4")
    values = np.frombuffer(parts[3][1], endian + _MAT_TYPES[parts[3][0]])
    return name, values.reshape(tuple(dims), order="F")


# ------------------------------------------------------------------------------------------- the raw copy
def find_pairs(raw: Path, partial: bool) -> tuple[list[int], list[str]]:
    """Image numbers with both an image and a label, and notes; a broken copy is an error unless ``partial``."""
    require_dirs(raw, "images", "labels", what="the GTA5 folder holding images/ and labels/")
    images = {int(p.stem) for p in (raw / "images").glob("*.png") if p.stem.isdigit()}
    labels = {int(p.stem) for p in (raw / "labels").glob("*.png") if p.stem.isdigit()}
    notes = []
    unpaired = sorted(images ^ labels)
    if unpaired:
        message = (f"{len(unpaired)} images lack their label or labels their image, e.g. number "
                   f"{unpaired[0]:05d}")
        if not partial:
            raise PrepareError(f"{message}; re-extract the zips of that range, or pass --partial to skip them")
        notes.append(message + " (skipped)")
    ids = sorted(images & labels)
    if not ids:
        raise PrepareError(f"{raw}/images has no numbered PNG files (00001.png ...); extract the image zips there")
    note = check_count(len(ids), NUM_IMAGES, "image/label pairs", partial,
                       "re-extract all ten 01_images.zip ... 11_labels.zip")
    return ids, notes + ([note] if note else [])


def split_lists(ids: list[int], split: dict[str, list[int]] | None, train_on_all: bool,
                partial: bool) -> tuple[dict[str, list[int]], list[str]]:
    """``{"gta5_all": ids, "gta5_train": ...}``; split numbers absent from the copy are errors unless ``partial``."""
    lists = {"gta5_all": ids}
    notes = []
    present = set(ids)
    for name, numbers in (split or {}).items():
        absent = [n for n in numbers if n not in present]
        if absent:
            message = f"the {name} split names {len(absent)} images that are not in the copy, e.g. {absent[0]:05d}"
            if not partial:
                raise PrepareError(f"{message}; re-extract them, or pass --partial to leave them out")
            notes.append(message + " (left out)")
        lists[f"gta5_{name}"] = [n for n in numbers if n in present]
    if train_on_all:
        lists["gta5_train"] = ids
    return lists, notes


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__)
    p.add_argument("--split", type=Path, help="folder with train.txt/val.txt/test.txt, or split.mat")
    p.add_argument("--train-on-all", action="store_true", help="gta5_train = every image (AdaptSegNet, MLSL)")
    args = p.parse_args(argv)
    if args.split and args.train_on_all:
        raise PrepareError("--split and --train-on-all both define gta5_train: give one of them")
    ids, notes = find_pairs(args.raw, args.partial)
    numbers, split_notes = split_lists(ids, read_split(args.split) if args.split else None, args.train_on_all,
                                       args.partial)
    if "gta5_train" not in numbers:
        split_notes.append("no --split: only lists/gta5_all.txt is written; the recipes read gta5_train "
                           "(give --split, or --train-on-all)")
    lists = {name: [Item(args.raw / "images" / f"{n:05d}.png", args.raw / "labels" / f"{n:05d}.png",
                         f"images/{n:05d}.png", f"labels/{n:05d}.png") for n in ns]
             for name, ns in numbers.items()}
    converter = Converter(read_label_ids, GTA5_ID_TO_TRAINID, "gta5", args.size, resize_mismatched=True)
    info = {"raw": str(args.raw), "split": str(args.split) if args.split else
            ("all images" if args.train_on_all else None)}
    summary = prepare(args.out, NAME, lists, converter, info=info, resume=args.resume, workers=args.workers,
                      notes=notes + split_notes)
    report(args.out, NAME, summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
