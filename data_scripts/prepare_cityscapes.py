"""Prepare Cityscapes (Cordts et al. 2016) for udalib.

Raw layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extracted into one folder)::

    RAW/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png      2048x1024 RGB
    RAW/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png        labelIds (0-33)

Prepared (DATA_ROOT/cityscapes/): ``images/<split>/<city>/<name>.png`` at 1024x512 (bilinear) and
``labels/<split>/<city>/<name>.png`` (train ids, nearest), with ``lists/cityscapes_train.txt`` (2 975) and
``lists/cityscapes_val.txt`` (500): the lists MaxSquare scores on (its protocol: labels at 1024x512).
``lists/cityscapes_valfull.txt`` pairs the val images and labels at the full 2048x1024 (``images_full/``,
``labels_full/``) for AdaptSegNet's / ADVENT's protocol, which predicts at 1024x512 and scores at full resolution
(``udalib.eval.evaluate.evaluate_protocol(..., "adaptsegnet")``); ``--no-full-val`` skips it (about 1.3 GB).
The test split has no public labels and is not converted.

    python data_scripts/prepare_cityscapes.py --raw /downloads/cityscapes --out /data/prepared
"""

from __future__ import annotations

import sys
from pathlib import Path

from udalib.data.labels import CITYSCAPES_ID_TO_TRAINID

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

NAME = "cityscapes"
SPLITS = {"train": 2975, "val": 500}
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"


def find_split(raw: Path, split: str, partial: bool) -> tuple[list[tuple[Path, Path, str]], list[str]]:
    """``(image, label, "<split>/<city>/<name>")`` of every pair in ``split``; a broken split is an error unless
    ``partial``."""
    image_dir, label_dir = raw / "leftImg8bit" / split, raw / "gtFine" / split
    require_dirs(raw, f"leftImg8bit/{split}", f"gtFine/{split}",
                 what="the folder holding leftImg8bit/ and gtFine/ (both zips extracted there)")
    images = {p.relative_to(image_dir).as_posix()[:-len(IMAGE_SUFFIX)]: p
              for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
    labels = {p.relative_to(label_dir).as_posix()[:-len(LABEL_SUFFIX)]: p
              for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
    if not images:
        raise PrepareError(f"{image_dir} has no <city>/*{IMAGE_SUFFIX} files; extract leftImg8bit_trainvaltest.zip")
    notes = []
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        message = f"{split}: {len(unpaired)} images lack their *{LABEL_SUFFIX} or labels their image, " \
                  f"e.g. {unpaired[0]}"
        if not partial:
            raise PrepareError(f"{message}; re-extract both zips, or pass --partial to skip them")
        notes.append(message + " (skipped)")
    names = sorted(set(images) & set(labels))
    note = check_count(len(names), SPLITS[split], f"{split} image/label pairs", partial,
                       "re-extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip")
    return [(images[n], labels[n], f"{split}/{n}") for n in names], notes + ([note] if note else [])


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__)
    p.add_argument("--no-full-val", action="store_true",
                   help="skip the full-resolution val copy (AdaptSegNet's protocol needs it)")
    args = p.parse_args(argv)
    lists, notes = {}, []
    for split in SPLITS:
        pairs, split_notes = find_split(args.raw, split, args.partial)
        notes += split_notes
        lists[f"cityscapes_{split}"] = [Item(im, lab, f"images/{rel}.png", f"labels/{rel}.png")
                                        for im, lab, rel in pairs]
        if split == "val" and not args.no_full_val:
            lists["cityscapes_valfull"] = [Item(im, lab, f"images_full/{rel}.png", f"labels_full/{rel}.png",
                                                keep_size=True) for im, lab, rel in pairs]
    converter = Converter(read_label_ids, CITYSCAPES_ID_TO_TRAINID, "cityscapes", args.size)
    summary = prepare(args.out, NAME, lists, converter, info={"raw": str(args.raw)}, resume=args.resume,
                      workers=args.workers, notes=notes)
    report(args.out, NAME, summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
