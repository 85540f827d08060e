"""What a prepared ``DATA_ROOT`` must hold, and a check that says what is present, missing, and how to fix it.

This module is the contract between ``data_scripts/`` (which writes the prepared layout) and
:class:`~udalib.data.SegmentationList` (which reads it)::

    <DATA_ROOT>/<dataset>/lists/<domain>_<split>.txt    lines "image [label]", paths relative to <dataset>/
    <DATA_ROOT>/<dataset>/prepare.json                  settings of the run that wrote it (size, finished)

``python -m udalib data check ROOT`` runs :func:`check_root` and prints :func:`format_report`. The expected
image counts are those of the complete downloads and the originals' splits (their READMEs and list files); a different
count is
reported as a note, not an error, because a partial copy (``--partial``) is a legitimate choice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .labels import CITIES as NTHU_CITIES

SETTINGS_FILE = "prepare.json"


@dataclass(frozen=True)
class ListSpec:
    """One list file of a prepared dataset: ``lists/<name>.txt``."""

    name: str  # "<domain>_<split>", e.g. "gta5_train"
    expected: int  # number of images in the complete download (the originals' list files)
    labelled: bool
    full_resolution: bool = False  # images and labels kept at the native size (AdaptSegNet's protocol)
    hint: str = ""  # extra option the script needs to write this list


@dataclass(frozen=True)
class DatasetSpec:
    """A prepared dataset: its folder under ``DATA_ROOT``, its lists, the script that writes it."""

    name: str  # folder under DATA_ROOT and the name given to open_dataset
    size: tuple[int, int]  # (W, H) the originals resize to, the scripts' default --size
    lists: tuple[ListSpec, ...]
    raw: str  # what the script's --raw points at
    markers: tuple[str, ...]  # relative paths that identify a raw download folder
    classes: str = "19"  # the class set its labels hold (stored as 19-class train ids): "19", "16" or "13"

    @property
    def script(self) -> str:
        return f"data_scripts/prepare_{self.name}.py"


DATASETS: dict[str, DatasetSpec] = {
    "gta5": DatasetSpec(
        "gta5", (1280, 720),
        (ListSpec("gta5_train", 12403, True, hint="--split <gta5_list/ or split.mat>"),
         ListSpec("gta5_val", 6382, True, hint="--split <gta5_list/ or split.mat>"),
         ListSpec("gta5_test", 6181, True, hint="--split <gta5_list/ or split.mat>"),
         ListSpec("gta5_all", 24966, True)),
        raw="the GTA5 folder holding images/ and labels/", markers=("images", "labels")),
    "synthia": DatasetSpec(
        "synthia", (1280, 760),
        (ListSpec("synthia_train", 9000, True), ListSpec("synthia_val", 400, True)),
        raw="the RAND_CITYSCAPES folder holding RGB/ and GT/LABELS/", markers=("RGB", "GT/LABELS"), classes="16"),
    "cityscapes": DatasetSpec(
        "cityscapes", (1024, 512),
        (ListSpec("cityscapes_train", 2975, True), ListSpec("cityscapes_val", 500, True),
         ListSpec("cityscapes_valfull", 500, True, full_resolution=True)),
        raw="the folder holding leftImg8bit/ and gtFine/", markers=("leftImg8bit", "gtFine")),
    "nthu": DatasetSpec(
        "nthu", (1024, 512),
        tuple(ListSpec(f"{city}_{split}", n, split == "test")
              for city in NTHU_CITIES for split, n in (("train", 3200), ("test", 100))),
        raw="the folder holding NTHU_Datasets/ (and NTHU_list/, if you have it)",
        markers=("NTHU_Datasets",), classes="13"),
}


@dataclass
class ListStatus:
    """What :func:`check_dataset` found for one list."""

    spec: ListSpec
    count: int | None = None  # None: the list file is absent
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count is not None and not self.problems


@dataclass
class DatasetStatus:
    """What :func:`check_dataset` found for one dataset, and the command that fixes it."""

    spec: DatasetSpec
    folder: Path
    lists: list[ListStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # dataset-level (no folder, unfinished run)
    fix: str = ""

    @property
    def present(self) -> bool:
        return any(s.count is not None for s in self.lists)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.lists)


def read_settings(folder: Path) -> dict:
    """The ``prepare.json`` a data script wrote into ``folder`` (empty dict if there is none)."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _expected_size(spec: ListSpec, settings: dict, default: tuple[int, int]) -> tuple[int, int] | None:
    """(W, H) the list's images should have; None for full-resolution lists (native size)."""
    if spec.full_resolution:
        return None
    return tuple(settings.get("size", default))


SAMPLE = 5  # files per list the quick check opens (the first, the last and three drawn at random)


def _sample(rows: list, k: int = SAMPLE) -> list:
    if len(rows) <= k:
        return rows
    import random

    middle = random.Random(len(rows)).sample(range(1, len(rows) - 1), k - 2)
    return [rows[0], *(rows[i] for i in sorted(middle)), rows[-1]]


def _check_list(folder: Path, spec: ListSpec, size: tuple[int, int] | None, by_hand: bool, *,
                full: bool = False, classes: str = "19", progress: bool = False) -> ListStatus:
    path = folder / "lists" / f"{spec.name}.txt"
    status = ListStatus(spec)
    if not path.is_file():
        return status
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    status.count = len(rows)
    if not rows:
        status.problems.append(f"{path} is empty")
        return status
    widths = {len(r) for r in rows}
    if widths != {2 if spec.labelled else 1}:
        want = "'image label'" if spec.labelled else "'image'"
        status.problems.append(f"{path}: lines must be {want}, found lines of {sorted(widths)} fields")
        return status
    absent = [p for r in rows for p in r if not os.path.isfile(folder / p)]
    if absent:
        status.problems.append(f"{len(absent)} listed files are missing, e.g. {folder / absent[0]}")
        return status
    from .labels import get_class_set

    allowed = np.zeros(256, bool)
    allowed[list(get_class_set(classes).train_ids) + [255]] = True
    checked = rows if full else _sample(rows)
    if progress and full:
        from tqdm.auto import tqdm

        checked = tqdm(checked, desc=spec.name, unit="file", leave=False)
    size_issues = status.notes if by_hand else status.problems
    for row in checked:  # every file opened and decoded: sizes, modes and label ids
        try:
            _check_files(folder, row, size, size_issues, allowed, classes)
        except (OSError, SyntaxError) as exc:
            status.problems.append(f"{folder / row[0]}: {exc}")
        if len(status.problems) >= 3:
            status.problems.append("more files not checked after 3 problems")
            break
    if not full and len(rows) > SAMPLE:
        status.notes.append(f"sampled {SAMPLE} of {len(rows)} images; `data check --full` opens every file")
    if status.count != spec.expected:
        status.notes.append(f"{status.count} images where the complete download has {spec.expected}")
    return status


def _check_files(folder: Path, row: list[str], size: tuple[int, int] | None, size_issues: list[str],
                 allowed: np.ndarray, classes: str) -> None:
    with Image.open(folder / row[0]) as im:
        im.load()  # decodes every byte: a truncated file fails here
        found = im.size
    if size is not None and found != size:  # a folder prepared by hand may use other sizes: a note then
        size_issues.append(f"{folder / row[0]} is {found[0]}x{found[1]}, expected {size[0]}x{size[1]}")
    if len(row) == 2:
        with Image.open(folder / row[1]) as lab:
            if lab.size != found or lab.mode not in ("L", "P"):
                raise OSError(f"its label {row[1]} should be a {found[0]}x{found[1]} single-channel train-id "
                              f"PNG, found {lab.size[0]}x{lab.size[1]} {lab.mode}")
            try:
                ids = np.unique(np.asarray(lab))  # decodes every byte of the label
            except (OSError, SyntaxError) as exc:
                raise OSError(f"its label {row[1]} is unreadable ({exc})") from None
        bad = [int(i) for i in ids if not allowed[i]]
        if bad:
            raise OSError(f"its label {row[1]} holds ids {bad[:8]} outside the {classes}-class train ids (and 255): "
                          "raw dataset ids must be converted by the data script")


def find_raw(root: Path, spec: DatasetSpec, depth: int = 2) -> Path | None:
    """A folder under ``root`` (at most ``depth`` levels down) that looks like ``spec``'s raw download.

    Prepared folders (they hold ``prepare.json``) are skipped: a prepared ``gta5/`` also has images/ and labels/.
    """
    frontier = [Path(root)]
    for level in range(depth + 1):
        for folder in frontier:
            if all((folder / m).is_dir() for m in spec.markers) and not (folder / SETTINGS_FILE).exists():
                return folder
        if level < depth:
            frontier = [c for f in frontier for c in _subfolders(f)]
    return None


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:  # unreadable folder: not ours to report here
        return []


def _fix_command(root: Path, status: DatasetStatus) -> str:
    spec = status.spec
    recorded = read_settings(status.folder).get("info", {}).get("raw")  # the download a previous run used
    raw = Path(recorded) if recorded and Path(recorded).is_dir() else find_raw(root, spec)
    raw_arg = str(raw) if raw is not None else f"<{spec.raw}>"
    by_hand = status.folder.is_dir() and not read_settings(status.folder)
    resume = " --resume" if status.folder.is_dir() and not by_hand else ""
    hints = sorted({s.spec.hint for s in status.lists if not s.ok and s.spec.hint})
    extra = f" {hints[0]}" if hints else ""
    command = f"python {spec.script} --raw {raw_arg} --out {root}{resume}{extra}"
    if by_hand:
        command = f"move {status.folder} aside (data_scripts did not write it), then: {command}"
    if raw is None:
        return f"download {spec.name} (data_scripts/README.md says where), then: {command}"
    return command


def check_dataset(root: str | os.PathLike, name: str, *, full: bool = False, progress: bool = False) -> DatasetStatus:
    """Check ``<root>/<name>`` against :data:`DATASETS` ``[name]``: lists, listed files, sizes, label ids, the run's
    state. ``full``: open and decode every image and label (``progress``: a bar); else a sample per list."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    root = Path(root)
    spec = DATASETS[name]
    folder = root / name
    status = DatasetStatus(spec, folder)
    if not folder.is_dir():
        status.problems.append(f"no folder {folder}")
    else:
        settings = read_settings(folder)
        if settings and not settings.get("finished", False):
            status.problems.append(f"{spec.script} did not finish (interrupted or failed)")
        for list_spec in spec.lists:
            size = _expected_size(list_spec, settings, spec.size)
            status.lists.append(_check_list(folder, list_spec, size, by_hand=not settings, full=full,
                                            classes=spec.classes, progress=progress))
    if not status.ok:
        status.fix = _fix_command(root, status)
    return status


def check_root(root: str | os.PathLike, names: tuple[str, ...] | None = None, *, full: bool = False,
               progress: bool = False) -> list[DatasetStatus]:
    """:func:`check_dataset` for every dataset in ``names`` (default: all four)."""
    return [check_dataset(root, name, full=full, progress=progress) for name in (names or tuple(DATASETS))]


def format_report(statuses: list[DatasetStatus]) -> str:
    """A readable report: one block per dataset, each list with its count, problems, notes, and the fix."""
    lines = []
    for st in statuses:
        state = "ok" if st.ok else ("incomplete" if st.present else "missing")
        lines.append(f"{st.spec.name:<11}{state}   ({st.folder})")
        lines += [f"    ! {p}" for p in st.problems]
        for ls in st.lists:
            if ls.count is None:
                lines.append(f"    missing  lists/{ls.spec.name}.txt")
                continue
            kind = "labelled" if ls.spec.labelled else "unlabelled"
            lines.append(f"    {'ok' if ls.ok else 'BROKEN':<8} lists/{ls.spec.name}.txt: {ls.count} images, {kind}")
            lines += [f"        ! {p}" for p in ls.problems] + [f"        note: {n}" for n in ls.notes]
        if st.fix:
            lines.append(f"    fix: {st.fix}")
    return "\n".join(lines)
