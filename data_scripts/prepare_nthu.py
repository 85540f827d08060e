"""Prepare NTHU CrossCity (Chen et al., "No More Discrimination", ICCV 2017) for udalib.

Raw layout::

    RAW/NTHU_Datasets/<City>/Images/Train/<id>.jpg (or .png)     2048x1024, 3 200 per city, unlabelled
    RAW/NTHU_Datasets/<City>/Images/Test/<id>.jpg (or .png)      100 per city
    RAW/NTHU_Datasets/<City>/Labels/Test/<id>_eval.png           Cityscapes labelIds, the 13 shared classes
    RAW/NTHU_list/<City>/List/{train,test}.txt                   optional: MaxSquare's lists of <id>

with ``<City>`` in Rio, Rome, Taipei, Tokyo. Without ``NTHU_list`` (or ``--lists``) every file of the folders is
used. Prepared (DATA_ROOT/nthu/): ``<city>/images/{train,test}/<id>.png`` at 1024x512 (bilinear),
``<city>/labels/test/<id>.png`` (19-class train ids, nearest), ``lists/<city>_train.txt`` (images only) and
``lists/<city>_test.txt``, ``<city>`` in lower case. The labels keep every annotated Cityscapes class;
``open_dataset("nthu:rome", "test", root=DATA_ROOT, class_set="13")`` maps them to the 13 classes on load.

    python data_scripts/prepare_nthu.py --raw /downloads/NTHU --out /data/prepared
"""

from __future__ import annotations

import sys
from pathlib import Path

from udalib.data.check import NTHU_CITIES
from udalib.data.labels import NTHU_ID_TO_TRAINID

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

NAME = "nthu"
COUNTS = {"train": 3200, "test": 100}
IMAGE_TYPES = (".jpg", ".png")
LABEL_SUFFIX = "_eval.png"


def dataset_folder(raw: Path) -> Path:
    """``raw/NTHU_Datasets``, or ``raw`` itself when it already is that folder."""
    if (raw / "NTHU_Datasets").is_dir():
        return raw / "NTHU_Datasets"
    if any((raw / city.capitalize()).is_dir() for city in NTHU_CITIES):
        return raw
    require_dirs(raw, "NTHU_Datasets", what="the folder holding NTHU_Datasets/")
    return raw / "NTHU_Datasets"


def _listed(list_file: Path) -> list[str]:
    return [line.strip() for line in list_file.read_text().splitlines() if line.strip()]


def find_city(data: Path, lists: Path | None, city: str, partial: bool) -> tuple[dict[str, list[Item]], list[str]]:
    """The train and test items of one city; a missing folder or file is an error (counts: unless ``partial``)."""
    City = city.capitalize()
    root = data / City
    if not root.is_dir():
        others = [c for c in NTHU_CITIES if c != city and (data / c.capitalize()).is_dir()]
        raise PrepareError(f"{data} has no {City}/ folder: extract the {City} archive there, or prepare the "
                           f"cities you have with --cities {' '.join(others) or 'CITY'}")
    require_dirs(root, "Images/Train", "Images/Test", "Labels/Test",
                 what=f"NTHU_Datasets/{City} with Images/Train, Images/Test and Labels/Test")
    out, notes = {}, []
    for split, expected in COUNTS.items():
        folder = root / "Images" / split.capitalize()
        files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_TYPES}
        list_file = lists / City / "List" / f"{split}.txt" if lists is not None else None
        ids = _listed(list_file) if list_file is not None and list_file.is_file() else sorted(files)
        missing = [i for i in ids if i not in files]
        if missing:
            raise PrepareError(f"{list_file} names {len(missing)} images absent from {folder}, e.g. {missing[0]}; "
                               "re-extract the city's archive")
        items = [Item(files[i], None, f"{city}/images/{split}/{i}.png") for i in ids]
        if split == "test":
            labels = root / "Labels" / "Test"
            unlabelled = [i for i in ids if not (labels / f"{i}{LABEL_SUFFIX}").is_file()]
            if unlabelled:
                raise PrepareError(f"{labels} has no {unlabelled[0]}{LABEL_SUFFIX} ({len(unlabelled)} test images "
                                   "lack their label); re-extract the city's archive")
            items = [Item(it.image, labels / f"{i}{LABEL_SUFFIX}", it.out_image, f"{city}/labels/test/{i}.png")
                     for i, it in zip(ids, items)]
        note = check_count(len(items), expected, f"{City} {split} images", partial,
                           f"re-extract NTHU_Datasets/{City}")
        notes += [note] if note else []
        out[f"{city}_{split}"] = items
    return out, notes


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__)
    p.add_argument("--cities", nargs="+", default=list(NTHU_CITIES), choices=NTHU_CITIES, metavar="CITY",
                   help=f"cities to prepare (default: all of {', '.join(NTHU_CITIES)})")
    p.add_argument("--lists", type=Path, help="NTHU_list folder (default: RAW/NTHU_list if it exists)")
    args = p.parse_args(argv)
    data = dataset_folder(args.raw)
    lists_dir = args.lists or next((d for d in (args.raw / "NTHU_list", data.parent / "NTHU_list") if d.is_dir()),
                                   None)
    if args.lists is not None and not args.lists.is_dir():
        raise PrepareError(f"--lists {args.lists} is not a folder; point it at NTHU_list (holding <City>/List/)")
    lists, notes = {}, []
    for city in args.cities:
        city_lists, city_notes = find_city(data, lists_dir, city, args.partial)
        lists |= city_lists
        notes += city_notes
    notes.append(f"lists from {lists_dir}" if lists_dir else "no NTHU_list folder: every image of each folder is "
                 "listed, sorted by name")
    converter = Converter(read_label_ids, NTHU_ID_TO_TRAINID, "nthu", args.size)
    summary = prepare(args.out, NAME, lists, converter, info={"raw": str(args.raw)}, resume=args.resume,
                      workers=args.workers, notes=notes)
    report(args.out, NAME, summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
