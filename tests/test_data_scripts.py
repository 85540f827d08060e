"""data_scripts/ end to end on tiny fixtures written in each dataset's exact on-disk format.

Every fixture label is a 4x8 grid of raw ids blown up to 2x2 blocks (8x16 pixels); the scripts run with
``--size 8x4``, so a correct conversion (ids -> train ids, nearest resize) gives back the grid mapped through the
dataset's table, which the tests spell out by hand. A bilinear label resize would blend neighbouring ids.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from udalib.cli import main as cli_main
from udalib.data import open_dataset

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "data_scripts"
SIZE = ["--size", "8x4"]

# Cityscapes labelIds (also GTA5's and NTHU's): every training class, and ignored ids
LABEL_IDS = np.array([[7, 8, 11, 12, 13, 17, 19, 20],
                      [21, 22, 23, 24, 25, 26, 27, 28],
                      [31, 32, 33, 0, 1, 2, 3, 4],
                      [5, 6, 9, 10, 14, 15, 16, 18]], dtype=np.uint8)
LABEL_TRAIN_IDS = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                            [8, 9, 10, 11, 12, 13, 14, 15],
                            [16, 17, 18, 255, 255, 255, 255, 255],
                            [255, 255, 255, 255, 255, 255, 255, 255]], dtype=np.uint8)
# SYNTHIA-RAND-CITYSCAPES class ids 0-22 (the dataset's README) and their train ids
SYNTHIA_IDS = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                        [8, 9, 10, 11, 12, 13, 14, 15],
                        [16, 17, 18, 19, 20, 21, 22, 3],
                        [3, 3, 3, 3, 1, 1, 1, 1]], dtype=np.uint16)
SYNTHIA_TRAIN_IDS = np.array([[255, 10, 2, 0, 1, 4, 8, 5],
                              [13, 7, 11, 18, 17, 255, 255, 6],
                              [9, 12, 14, 15, 16, 3, 255, 0],
                              [0, 0, 0, 0, 10, 10, 10, 10]], dtype=np.uint8)
# NTHU read back with class_set="13": train id -> 13-class id (wall, fence, pole, terrain, truck, train -> 255)
LABEL_13 = np.array([[0, 1, 2, 255, 255, 255, 3, 4],
                     [5, 255, 6, 7, 8, 9, 255, 10],
                     [255, 11, 12, 255, 255, 255, 255, 255],
                     [255, 255, 255, 255, 255, 255, 255, 255]], dtype=np.uint8)


def blocks(grid: np.ndarray) -> np.ndarray:
    """A 4x8 grid -> 8x16 pixels, each id a 2x2 block."""
    return np.kron(grid, np.ones((2, 2), dtype=grid.dtype))


def rgb(seed: int, h: int = 8, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    """GTA5's label format: a palette PNG whose indices are the labelIds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([v for c in range(256) for v in (c, (7 * c) % 256, 255 - c)])
    im.save(path)


def save_png(path: Path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def save_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG (SYNTHIA's GT/LABELS format), rows filtered with None/Sub/Up/Average/Paeth in turn."""
    h, w, c = array.shape
    raw = array.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = 2 * c
    rows = []
    for r in range(h):
        x = raw[r]
        up = raw[r - 1] if r else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - up_left
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        kind = r % 5
        pred = [0, left, up, (left + up) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes())

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture()
def scripts(monkeypatch):
    """Import a data script the way ``python data_scripts/<script>.py`` does (its folder on the path)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module


# ----------------------------------------------------------------------------------------------- GTA5
def make_gta5(raw: Path, numbers=(1, 2, 3)) -> Path:
    for n in numbers:
        save_png(raw / "images" / f"{n:05d}.png", rgb(n))
        save_palette_png(raw / "labels" / f"{n:05d}.png", blocks(LABEL_IDS))
    return raw


def test_gta5_end_to_end_with_a_split_folder(tmp_path, scripts):
    gta5 = scripts("prepare_gta5")
    raw = make_gta5(tmp_path / "GTA5")
    split = tmp_path / "gta5_list"
    split.mkdir()
    (split / "train.txt").write_text("1\n00002\n")  # MaxSquare's lists hold image numbers
    (split / "val.txt").write_text("00003.png\n")
    out = tmp_path / "prepared"
    assert gta5.main(["--raw", str(raw), "--out", str(out), "--split", str(split), "--partial", *SIZE]) == 0

    folder = out / "gta5"
    assert (folder / "lists" / "gta5_train.txt").read_text() == \
        "images/00001.png labels/00001.png\nimages/00002.png labels/00002.png\n"
    assert (folder / "lists" / "gta5_val.txt").read_text() == "images/00003.png labels/00003.png\n"
    assert len((folder / "lists" / "gta5_all.txt").read_text().splitlines()) == 3
    for n in (1, 2, 3):
        np.testing.assert_array_equal(read(folder / "labels" / f"{n:05d}.png"), LABEL_TRAIN_IDS)
        image = Image.open(folder / "images" / f"{n:05d}.png")
        assert image.size == (8, 4) and image.mode == "RGB"
        raw_image = Image.fromarray(rgb(n))
        np.testing.assert_array_equal(np.asarray(image), np.asarray(raw_image.resize((8, 4), Image.BILINEAR)))
        assert not np.array_equal(np.asarray(image), np.asarray(raw_image.resize((8, 4), Image.BICUBIC)))
    settings = json.loads((folder / "prepare.json").read_text())
    assert settings["finished"] and settings["size"] == [8, 4] and settings["image_interpolation"] == "bilinear"
    assert not (folder / ".partial").exists()

    train = open_dataset("gta5", "train", root=out)
    assert len(train) == 2 and train.labelled
    np.testing.assert_array_equal(train.load(1)[1], LABEL_TRAIN_IDS)


def test_gta5_label_of_another_size_is_resized_on_its_own(tmp_path, scripts, capsys):
    # a few real GTA5 labels differ in size from their image; the seeds resize both to 1280x720 anyway
    raw = make_gta5(tmp_path / "GTA5", numbers=(1,))
    save_palette_png(raw / "labels" / "00001.png", np.kron(LABEL_IDS, np.ones((4, 4), np.uint8)))  # 32x16
    out = tmp_path / "prepared"
    assert scripts("prepare_gta5").main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE]) == 0
    np.testing.assert_array_equal(read(out / "gta5" / "labels" / "00001.png"), LABEL_TRAIN_IDS)
    assert "1 labels differ in size from their image" in capsys.readouterr().out


def _mat_element(dtype: int, data: bytes) -> bytes:
    return struct.pack("<II", dtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _mat_matrix(name: str, values: np.ndarray, data_type: int, numpy_type: str) -> bytes:
    flags = _mat_element(6, struct.pack("<II", 6, 0))  # mxDOUBLE_CLASS
    dims = _mat_element(5, struct.pack("<ii", len(values), 1))
    raw_name = name.encode()
    name_el = (struct.pack("<HH", 1, len(raw_name)) + raw_name.ljust(4, b"\0") if len(raw_name) <= 4
               else _mat_element(1, raw_name))  # short names use the "small element" form
    body = flags + dims + name_el + _mat_element(data_type, values.astype(numpy_type).tobytes())
    return _mat_element(14, body)


def test_gta5_reads_the_official_split_mat(tmp_path, scripts):
    gta5 = scripts("prepare_gta5")
    header = b"MATLAB 5.0 MAT-file, written by hand".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    train = _mat_matrix("trainIds", np.array([1, 2, 5]), 9, "<f8")  # doubles
    val = _mat_matrix("valIds", np.array([3]), 2, "u1")  # MATLAB stores small integers as uint8
    compressed = zlib.compress(val)
    test = _mat_matrix("test", np.array([4]), 9, "<f8")
    path = tmp_path / "split.mat"
    path.write_bytes(header + train + struct.pack("<II", 15, len(compressed)) + compressed + test)
    assert gta5.read_split(path) == {"train": [1, 2, 5], "val": [3], "test": [4]}

    hdf5 = tmp_path / "v73.mat"
    hdf5.write_bytes(b"MATLAB 7.3 MAT-file".ljust(128))
    with pytest.raises(gta5.PrepareError, match="save it with -v7"):
        gta5.read_split(hdf5)

    # a split naming images the copy lacks (a partial copy): they are left out, and said so
    raw = make_gta5(tmp_path / "GTA5", numbers=(1, 2, 3, 4))
    out = tmp_path / "prepared"
    assert gta5.main(["--raw", str(raw), "--out", str(out), "--split", str(path), "--partial", *SIZE]) == 0
    assert (out / "gta5" / "lists" / "gta5_train.txt").read_text().split()[::2] == ["images/00001.png",
                                                                                   "images/00002.png"]
    notes = json.loads((out / "gta5" / "prepare.json").read_text())["notes"]
    assert "the train split names 1 images that are not in the copy, e.g. 00005 (left out)" in notes
    with pytest.raises(gta5.PrepareError, match="--split and --train-on-all both define gta5_train"):
        gta5.main(["--raw", str(raw), "--out", str(out), "--split", str(path), "--train-on-all", *SIZE])


# ----------------------------------------------------------------------------------------------- SYNTHIA
def make_synthia(raw: Path, numbers=(0, 1, 9000), first=SYNTHIA_IDS) -> Path:
    rng = np.random.default_rng(0)
    for n in numbers:
        save_png(raw / "RGB" / f"{n:07d}.png", rgb(n))
        label = np.zeros((8, 16, 3), np.uint16)
        label[..., 0] = blocks(first)
        label[..., 1] = rng.integers(0, 2000, (8, 16))  # instance ids: their high byte is not zero
        save_png16(raw / "GT" / "LABELS" / f"{n:07d}.png", label)
    return raw


def test_synthia_16_bit_labels_end_to_end(tmp_path, scripts):
    raw = make_synthia(tmp_path / "RAND_CITYSCAPES")
    with Image.open(raw / "GT" / "LABELS" / "0000000.png") as im:  # Pillow alone would see 8 bits
        assert im.mode == "RGB" and not np.asarray(im)[..., 0].any()
    out = tmp_path / "prepared"
    assert scripts("prepare_synthia").main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE]) == 0
    folder = out / "synthia"
    assert (folder / "lists" / "synthia_train.txt").read_text() == \
        "images/0000000.png labels/0000000.png\nimages/0000001.png labels/0000001.png\n"
    assert (folder / "lists" / "synthia_val.txt").read_text() == "images/0009000.png labels/0009000.png\n"
    for n in (0, 1, 9000):
        np.testing.assert_array_equal(read(folder / "labels" / f"{n:07d}.png"), SYNTHIA_TRAIN_IDS)
    val16 = open_dataset("synthia", "val", root=out, class_set="16")
    expected16 = np.array([[255, 9, 2, 0, 1, 4, 8, 5], [12, 7, 10, 15, 14, 255, 255, 6],
                           [255, 11, 255, 13, 255, 3, 255, 0], [0, 0, 0, 0, 9, 9, 9, 9]])
    np.testing.assert_array_equal(val16.load(0)[1], expected16)


def test_synthia_id_above_255_is_an_error_and_a_fixed_file_resumes(tmp_path, scripts):
    synthia = scripts("prepare_synthia")
    raw = make_synthia(tmp_path / "RAND_CITYSCAPES")
    bad = SYNTHIA_IDS.copy()
    bad[0, 0] = 256 + 3  # low byte 3 (road): only the high byte tells it is not a SYNTHIA id
    make_synthia(raw, numbers=(1,), first=bad)
    out = tmp_path / "prepared"
    with pytest.raises(synthia.PrepareError) as err:
        synthia.main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE])
    message = str(err.value)
    assert "1 of 3 items failed" in message and "0000001.png" in message and "[259]" in message
    assert "--resume" in message
    folder = out / "synthia"
    assert not (folder / "lists").exists()  # no list names a file that is not there
    assert not (folder / "labels" / "0000001.png").exists() and not (folder / "images" / "0000001.png").exists()
    assert not (folder / ".partial").exists()
    assert json.loads((folder / "prepare.json").read_text())["finished"] is False
    kept = (folder / "labels" / "0000000.png").stat().st_mtime_ns

    make_synthia(raw, numbers=(1,))  # the user re-extracts the file
    assert synthia.main(["--raw", str(raw), "--out", str(out), "--partial", "--resume", *SIZE]) == 0
    assert (folder / "labels" / "0000000.png").stat().st_mtime_ns == kept  # finished files are not redone
    np.testing.assert_array_equal(read(folder / "labels" / "0000001.png"), SYNTHIA_TRAIN_IDS)
    assert json.loads((folder / "prepare.json").read_text())["finished"] is True


def test_synthia_colour_label_is_refused(tmp_path, scripts):
    raw = make_synthia(tmp_path / "RAND_CITYSCAPES", numbers=(0,))
    save_png(raw / "GT" / "LABELS" / "0000000.png", rgb(5))  # an 8-bit colour rendering (GT/COLOR)
    synthia = scripts("prepare_synthia")
    with pytest.raises(synthia.PrepareError, match="8-bit colour PNG; expected the 16-bit GT/LABELS"):
        synthia.main(["--raw", str(raw), "--out", str(tmp_path / "prepared"), "--partial", *SIZE])


# ----------------------------------------------------------------------------------------------- Cityscapes
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}


def make_cityscapes(raw: Path, block: int = 4) -> Path:
    """The 4x8 label grid blown up to ``block`` x ``block`` pixels per id (16x32 by default; 2048x1024 / 16 with
    ``block=16``), images of the same size."""
    h, w = 4 * block, 8 * block
    for split, cities in CITIES.items():
        for c, city in enumerate(cities):
            for frame in (19, 20):
                stem = f"{city}_00000{c}_0000{frame}"
                save_png(raw / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(frame + c, h, w))
                gt = raw / "gtFine" / split / city
                save_png(gt / f"{stem}_gtFine_labelIds.png", np.kron(LABEL_IDS, np.ones((block, block), np.uint8)))
                save_png(gt / f"{stem}_gtFine_color.png", rgb(1, h, w))  # files the script must ignore
                save_png(gt / f"{stem}_gtFine_instanceIds.png", np.zeros((h, w), np.uint16))
                (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
    return raw


def test_cityscapes_end_to_end_with_the_full_resolution_val(tmp_path, scripts):
    raw = make_cityscapes(tmp_path / "cityscapes")
    out = tmp_path / "prepared"
    assert scripts("prepare_cityscapes").main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE]) == 0
    folder = out / "cityscapes"
    assert (folder / "lists" / "cityscapes_val.txt").read_text().splitlines() == [
        f"images/val/frankfurt/frankfurt_000000_0000{f}.png labels/val/frankfurt/frankfurt_000000_0000{f}.png"
        for f in (19, 20)]
    assert len((folder / "lists" / "cityscapes_train.txt").read_text().splitlines()) == 4
    np.testing.assert_array_equal(read(folder / "labels/train/bochum/bochum_000001_000020.png"), LABEL_TRAIN_IDS)
    full = "val/frankfurt/frankfurt_000000_000019"
    # the full-resolution copy: the download's image bytes, the labels mapped but not resized
    assert (folder / f"images_full/{full}.png").read_bytes() == \
        (raw / f"leftImg8bit/{full}_leftImg8bit.png").read_bytes()
    np.testing.assert_array_equal(read(folder / f"labels_full/{full}.png"),
                                  np.kron(LABEL_TRAIN_IDS, np.ones((4, 4), np.uint8)))
    valfull = open_dataset("cityscapes", "valfull", root=out)
    assert valfull.load(0)[1].shape == (16, 32)
    assert cli_main(["data", "check", str(out), "--dataset", "cityscapes"]) == 0


def test_cityscapes_missing_folder_writes_nothing(tmp_path, scripts):
    raw = make_cityscapes(tmp_path / "cityscapes")
    for p in sorted((raw / "gtFine" / "val").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (raw / "gtFine" / "val").rmdir()
    cityscapes = scripts("prepare_cityscapes")
    out = tmp_path / "prepared"
    with pytest.raises(cityscapes.PrepareError, match=r"has no gtFine/val/ folder.*re-extract"):
        cityscapes.main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE])
    assert not out.exists()


def test_incomplete_download_is_refused_without_partial(tmp_path, scripts):
    cityscapes = scripts("prepare_cityscapes")
    raw = make_cityscapes(tmp_path / "cityscapes")
    out = tmp_path / "prepared"
    with pytest.raises(cityscapes.PrepareError, match=r"train image/label pairs: found 4, the complete download "
                                                       r"has 2975.*or pass --partial"):
        cityscapes.main(["--raw", str(raw), "--out", str(out), *SIZE])
    assert not out.exists()


def test_unexpected_label_id_names_file_and_id(tmp_path, scripts):
    raw = make_cityscapes(tmp_path / "cityscapes")
    ids = LABEL_IDS.copy()
    ids[3, 7] = 40  # not a Cityscapes labelId
    bad = raw / "gtFine/val/frankfurt/frankfurt_000000_000020_gtFine_labelIds.png"
    save_png(bad, np.kron(ids, np.ones((4, 4), np.uint8)))
    cityscapes = scripts("prepare_cityscapes")
    out = tmp_path / "prepared"
    with pytest.raises(cityscapes.PrepareError) as err:
        cityscapes.main(["--raw", str(raw), "--out", str(out), "--partial", *SIZE])
    message = str(err.value)
    # the val item fails in both of its lists (1024x512 and full resolution)
    assert "2 of 8 items failed" in message and f"{bad}: unexpected ids [40]" in message
    folder = out / "cityscapes"
    assert not (folder / "lists").exists() and not (folder / ".partial").exists()
    assert not list(folder.rglob("frankfurt_000000_000020.png"))
    assert cli_main(["data", "check", str(out), "--dataset", "cityscapes"]) == 1


# ----------------------------------------------------------------------------------------------- interruption
def test_interrupted_run_resumes_without_redoing_finished_files(tmp_path, scripts, monkeypatch, capsys):
    common, gta5 = scripts("_common"), scripts("prepare_gta5")
    raw = make_gta5(tmp_path / "GTA5", numbers=(1, 2, 3, 4))
    out = tmp_path / "prepared"
    args = ["--raw", str(raw), "--out", str(out), "--partial", "--train-on-all", *SIZE]
    convert, calls = common.convert_item, []

    def killed_on_the_third(item, converter, root):
        calls.append(item.out_image)
        if len(calls) == 3:  # as if killed while writing: half a file in .partial, then the interrupt
            (root / common.PARTIAL / "tmpkilled.png").write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt
        return convert(item, converter, root)

    monkeypatch.setattr(common, "convert_item", killed_on_the_third)
    assert common.run_main(gta5.main, args) == 130
    assert "run the same command with --resume" in capsys.readouterr().err
    folder = out / "gta5"
    assert not (folder / "lists").exists()
    assert (folder / ".partial" / "tmpkilled.png").exists()
    assert cli_main(["data", "check", str(out), "--dataset", "gta5"]) == 1
    assert "did not finish" in capsys.readouterr().out

    # the second finished image is damaged afterwards (a copy cut short): resume must redo it, not trust it
    damaged = folder / "images" / "00002.png"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    kept = (folder / "labels" / "00001.png").stat().st_mtime_ns
    monkeypatch.setattr(common, "convert_item", convert)
    calls.clear()
    with pytest.raises(common.PrepareError, match="already exists; pass --resume"):
        gta5.main(args)
    assert gta5.main([*args, "--resume"]) == 0
    assert "3 converted, 1 already finished" in capsys.readouterr().out
    assert (folder / "labels" / "00001.png").stat().st_mtime_ns == kept
    assert not (folder / ".partial").exists()
    for n in (1, 2, 3, 4):
        np.testing.assert_array_equal(read(folder / "labels" / f"{n:05d}.png"), LABEL_TRAIN_IDS)
        assert Image.open(folder / "images" / f"{n:05d}.png").size == (8, 4)
    assert len((folder / "lists" / "gta5_train.txt").read_text().splitlines()) == 4

    # resuming with another size would mix sizes: refused, nothing touched
    before = damaged.read_bytes()
    with pytest.raises(common.PrepareError, match=r"other settings \(size: was \[8, 4\], now \[16, 8\]\)"):
        gta5.main([*args[:-2], "--size", "16x8", "--resume"])
    assert damaged.read_bytes() == before


# ----------------------------------------------------------------------------------------------- NTHU
def make_nthu(raw: Path, city: str, n_train: int = 2, n_test: int = 2, suffix: str = ".jpg",
              with_lists: bool = True) -> list[str]:
    root = raw / "NTHU_Datasets" / city
    names = [f"pano_{i:05d}_0_{a}" for i, a in zip(range(10, 10 + n_train + n_test), [0, 180] * 5)]
    for k, name in enumerate(names):
        split = "Train" if k < n_train else "Test"
        save_png(root / "Images" / split / f"{name}{suffix}", rgb(k, 16, 32),
                 **({"quality": 95} if suffix == ".jpg" else {}))
        if split == "Test":
            save_png(root / "Labels" / "Test" / f"{name}_eval.png", np.kron(LABEL_IDS, np.ones((4, 4), np.uint8)))
    if with_lists:
        lists = raw / "NTHU_list" / city / "List"
        lists.mkdir(parents=True)
        (lists / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
        (lists / "test.txt").write_text("\n".join(names[n_train:][::-1]) + "\n")  # the list's order is kept
    return names


def test_nthu_labels_read_back_as_13_classes(tmp_path, scripts):
    raw = tmp_path / "NTHU"
    rome = make_nthu(raw, "Rome")
    rio = make_nthu(raw, "Rio", suffix=".png", with_lists=False)
    # Rio has no NTHU_list: the folders' contents are listed, sorted
    (raw / "NTHU_list" / "Rio").mkdir()
    out = tmp_path / "prepared"
    assert scripts("prepare_nthu").main(["--raw", str(raw), "--out", str(out), "--cities", "rome", "rio",
                                         "--partial", *SIZE]) == 0
    folder = out / "nthu"
    assert (folder / "lists" / "rome_train.txt").read_text() == \
        "".join(f"rome/images/train/{n}.png\n" for n in rome[:2])
    assert (folder / "lists" / "rome_test.txt").read_text() == \
        "".join(f"rome/images/test/{n}.png rome/labels/test/{n}.png\n" for n in rome[:1:-1])
    assert (folder / "lists" / "rio_test.txt").read_text().split()[0] == f"rio/images/test/{rio[2]}.png"
    # stored: 19-class train ids (wall 12 -> 3 kept); read with class_set="13": car 26 -> 13 -> 9, wall -> 255
    np.testing.assert_array_equal(read(folder / "rome/labels/test" / f"{rome[3]}.png"), LABEL_TRAIN_IDS)
    for city in ("rome", "rio"):
        test = open_dataset(f"nthu:{city}", "test", root=out, class_set="13")
        image, label, _, _ = test[0]
        assert image.shape == (3, 4, 8)
        np.testing.assert_array_equal(label.numpy(), LABEL_13)
        assert label[1, 5] == 9 and label[0, 3] == 255
    train = open_dataset("nthu:rome", "train", root=out)
    assert not train.labelled and len(train) == 2


def test_nthu_missing_label_folder_writes_nothing(tmp_path, scripts):
    raw = tmp_path / "NTHU"
    make_nthu(raw, "Tokyo")
    labels = raw / "NTHU_Datasets" / "Tokyo" / "Labels" / "Test"
    for p in labels.iterdir():
        p.unlink()
    labels.rmdir()
    nthu = scripts("prepare_nthu")
    out = tmp_path / "prepared"
    with pytest.raises(nthu.PrepareError, match=r"Tokyo has no Labels/Test/ folder"):
        nthu.main(["--raw", str(raw), "--out", str(out), "--cities", "tokyo", "--partial", *SIZE])
    with pytest.raises(nthu.PrepareError, match=r"NTHU_Datasets has no Taipei/ folder: extract the Taipei "
                                                 r"archive there, or prepare the cities you have with --cities tokyo"):
        nthu.main(["--raw", str(raw), "--out", str(out), "--cities", "taipei", "--partial", *SIZE])
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- data check
def test_data_check_says_what_is_missing_and_the_fix(tmp_path, scripts, capsys):
    root = tmp_path / "data"
    raw = make_gta5(root / "downloads" / "GTA5")  # a raw download found under ROOT goes into the fix command
    assert scripts("prepare_gta5").main(["--raw", str(raw), "--out", str(root), "--partial", *SIZE]) == 0
    capsys.readouterr()
    assert cli_main(["data", "check", str(root)]) == 1
    text = capsys.readouterr().out
    assert "gta5       incomplete" in text and "ok       lists/gta5_all.txt: 3 images, labelled" in text
    assert "note: 3 images where the complete download has 24966" in text
    assert "missing  lists/gta5_train.txt" in text
    assert f"fix: python data_scripts/prepare_gta5.py --raw {raw} --out {root} --resume --split" in text
    assert "synthia    missing" in text
    assert f"download synthia (data_scripts/README.md says where), then: python data_scripts/prepare_synthia.py " \
           f"--raw <the RAND_CITYSCAPES folder holding RGB/ and GT/LABELS/> --out {root}" in text

    (root / "gta5" / "labels" / "00002.png").unlink()  # a listed file disappears
    assert cli_main(["data", "check", str(root), "--dataset", "gta5"]) == 1
    assert "BROKEN   lists/gta5_all.txt" in capsys.readouterr().out


def test_scripts_run_from_the_command_line(tmp_path):
    """The documented command, in a fresh interpreter, with two worker processes."""
    raw = make_synthia(tmp_path / "RAND_CITYSCAPES", numbers=(0, 1, 2, 9000))
    out = tmp_path / "prepared"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, str(SCRIPTS / "prepare_synthia.py"), "--raw", str(raw), "--out", str(out), "--partial",
           "--workers", "2", *SIZE]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "synthia: 4 converted, 0 already finished" in done.stdout
    for n in (0, 1, 2, 9000):
        np.testing.assert_array_equal(read(out / "synthia" / "labels" / f"{n:07d}.png"), SYNTHIA_TRAIN_IDS)
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--resume" in again.stderr


def test_data_check_accepts_a_folder_prepared_by_hand(tmp_path, capsys):
    folder = tmp_path / "synthia"
    for split, n in (("train", 0), ("val", 9000)):
        save_png(folder / "images" / f"{n}.png", rgb(n, 6, 10))
        save_png(folder / "labels" / f"{n}.png", np.zeros((6, 10), np.uint8))
        (folder / "lists").mkdir(exist_ok=True)
        (folder / "lists" / f"synthia_{split}.txt").write_text(f"images/{n}.png labels/{n}.png\n")
    assert cli_main(["data", "check", str(tmp_path), "--dataset", "synthia"]) == 0
    text = capsys.readouterr().out
    assert "synthia    ok" in text  # sizes other than the seeds' are only a note without prepare.json
    assert f"note: {folder / 'images' / '0.png'} is 10x6, expected 1280x760" in text

    save_png(folder / "labels" / "9000.png", rgb(1, 6, 10))  # a colour label
    assert cli_main(["data", "check", str(tmp_path), "--dataset", "synthia"]) == 1
    text = capsys.readouterr().out
    assert "its label labels/9000.png should be a 10x6 single-channel train-id PNG, found 10x6 RGB" in text
    assert f"fix: download synthia (data_scripts/README.md says where), then: move {folder} aside" in text


def test_data_check_full_opens_every_file_and_the_quick_check_says_it_sampled(tmp_path, capsys):
    from udalib.data import check

    folder = tmp_path / "synthia"
    (folder / "lists").mkdir(parents=True)
    n = 12
    for i in range(n):
        save_png(folder / "images" / f"{i}.png", rgb(i, 6, 10))
        save_png(folder / "labels" / f"{i}.png", np.full((6, 10), 10, np.uint8))  # sky: in the 16-class set
    (folder / "lists" / "synthia_train.txt").write_text("".join(f"images/{i}.png labels/{i}.png\n" for i in range(n)))
    (folder / "lists" / "synthia_val.txt").write_text("images/0.png labels/0.png\n")
    sampled = {row[0] for row in check._sample([[f"images/{i}.png"] for i in range(n)])}
    hidden = [i for i in range(n) if f"images/{i}.png" not in sampled]
    truncated, raw_ids = folder / "images" / f"{hidden[0]}.png", folder / "labels" / f"{hidden[1]}.png"
    truncated.write_bytes(truncated.read_bytes()[:50])
    save_png(raw_ids, np.full((6, 10), 9, np.uint8))  # terrain: not a SYNTHIA class, a sign of unconverted ids

    assert cli_main(["data", "check", str(tmp_path), "--dataset", "synthia"]) == 0  # the sample misses both
    assert f"note: sampled 5 of {n} images; `data check --full` opens every file" in capsys.readouterr().out
    assert cli_main(["data", "check", str(tmp_path), "--dataset", "synthia", "--full", "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "BROKEN   lists/synthia_train.txt: 12 images" in text and "sampled" not in text
    assert f"! {truncated}: " in text
    assert (f"! {folder / 'images' / f'{hidden[1]}.png'}: its label labels/{hidden[1]}.png holds ids [9] outside "
            "the 16-class train ids (and 255): raw dataset ids must be converted by the data script") in text


def test_data_check_full_names_a_truncated_label_as_the_label(tmp_path, capsys):

    folder = tmp_path / "synthia"
    (folder / "lists").mkdir(parents=True)
    for i in range(3):
        save_png(folder / "images" / f"{i}.png", rgb(i, 6, 10))
        save_png(folder / "labels" / f"{i}.png", np.full((6, 10), 10, np.uint8))
    (folder / "lists" / "synthia_train.txt").write_text("".join(f"images/{i}.png labels/{i}.png\n" for i in range(3)))
    (folder / "lists" / "synthia_val.txt").write_text("images/0.png labels/0.png\n")
    label = folder / "labels" / "2.png"
    label.write_bytes(label.read_bytes()[:45])
    assert cli_main(["data", "check", str(tmp_path), "--dataset", "synthia", "--full",
                     "--quiet"]) == 1
    text = capsys.readouterr().out
    assert f"! {folder / 'images' / '2.png'}: its label labels/2.png is unreadable (" in text
