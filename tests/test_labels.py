"""Label tables, class subsets and palettes against Cityscapes' ``labels.py`` and the SYNTHIA class list (values, not
shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from udalib.data import labels as L
from udalib.data.batch import IGNORE_INDEX

# Cityscapes labels.py: trainId -> (name, Cityscapes labelId)
SPEC_19 = [
    (0, "road", 7), (1, "sidewalk", 8), (2, "building", 11), (3, "wall", 12), (4, "fence", 13),
    (5, "pole", 17), (6, "traffic light", 19), (7, "traffic sign", 20), (8, "vegetation", 21),
    (9, "terrain", 22), (10, "sky", 23), (11, "person", 24), (12, "rider", 25), (13, "car", 26),
    (14, "truck", 27), (15, "bus", 28), (16, "train", 31), (17, "motorcycle", 32), (18, "bicycle", 33),
]
SPEC_IGNORED_LABEL_IDS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]

# SYNTHIA-RAND-CITYSCAPES class list: raw id -> 19 trainId
SPEC_SYNTHIA = {1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18,
                12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3}
SPEC_SYNTHIA_IGNORED = [0, 13, 14, 22]


@pytest.mark.parametrize("train_id, name, label_id", SPEC_19)
def test_cityscapes_and_gta5_tables_match_spec(train_id, name, label_id):
    assert L.CITYSCAPES_CLASSES[train_id] == name
    for table, mapping in [(L.CITYSCAPES_ID_TO_TRAINID, L.CITYSCAPES_ID_TO_TRAINID_DICT),
                           (L.GTA5_ID_TO_TRAINID, L.GTA5_ID_TO_TRAINID_DICT)]:
        assert table[label_id] == train_id
        assert mapping[label_id] == train_id


@pytest.mark.parametrize("label_id", SPEC_IGNORED_LABEL_IDS + [-1])
def test_cityscapes_ignored_ids(label_id):
    assert L.CITYSCAPES_ID_TO_TRAINID_DICT[label_id] == IGNORE_INDEX
    if label_id >= 0:
        assert L.CITYSCAPES_ID_TO_TRAINID[label_id] == IGNORE_INDEX


def test_cityscapes_table_is_complete():
    table = L.CITYSCAPES_ID_TO_TRAINID
    assert table.dtype == np.uint8 and table.shape == (256,)
    assert set(L.CITYSCAPES_ID_TO_TRAINID_DICT) == set(range(-1, 34))
    # exactly the 19 spec labelIds map to a class; everything else (34..255 included) is 255
    assert sorted(np.flatnonzero(table != IGNORE_INDEX)) == sorted(lid for _, _, lid in SPEC_19)
    assert sorted(table[table != IGNORE_INDEX]) == list(range(19))


@pytest.mark.parametrize("raw_id, train_id", sorted(SPEC_SYNTHIA.items()))
def test_synthia_table_matches_spec(raw_id, train_id):
    assert L.SYNTHIA_ID_TO_TRAINID[raw_id] == train_id
    assert L.SYNTHIA_ID_TO_TRAINID_DICT[raw_id] == train_id


def test_synthia_ignored_and_16_class_mode():
    for raw_id in SPEC_SYNTHIA_IGNORED:
        assert L.SYNTHIA_ID_TO_TRAINID[raw_id] == IGNORE_INDEX
    assert L.SYNTHIA_ID_TO_TRAINID[23] == IGNORE_INDEX
    t16 = L.SYNTHIA_ID_TO_TRAINID16
    # terrain (16), truck (18), train (20) become ignore in 16-class mode
    assert [t16[i] for i in (16, 18, 20)] == [255, 255, 255]
    # the others are renumbered into 0..15: sky (trainId 10) -> 9, bicycle (18) -> 15, wall (3) -> 3
    assert t16[1] == 9 and t16[11] == 15 and t16[21] == 3 and t16[3] == 0 and t16[19] == 13
    assert sorted(t16[t16 != 255]) == list(range(16))
    raw = np.array([[1, 16, 11], [0, 21, 19]], dtype=np.uint16)
    np.testing.assert_array_equal(L.encode_labels(raw, t16, source="synthia"), [[9, 255, 15], [255, 3, 13]])


def test_class_subsets():
    assert L.SYNTHIA16_TRAINIDS == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert L.CLASS13_TRAINIDS == (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert list(L.CLASS13_IN_16) == [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert L.CLASS_SETS["16"].names == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle")
    assert L.CLASS_SETS["13"].names == (
        "road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky", "person",
        "rider", "car", "bus", "motorcycle", "bicycle")
    assert L.CLASS_SETS["16"].palette[9] == (70, 130, 180)  # sky
    assert [L.get_class_set(n).num_classes for n in (19, "16", 13)] == [19, 16, 13]
    with pytest.raises(ValueError, match="19, 16, 13"):
        L.get_class_set("12")


def test_remap_to_subset_numpy_and_tensor():
    label = np.array([[0, 3, 9, 10], [14, 16, 18, 255]], dtype=np.uint8)
    out16 = L.remap_to_subset(label, "16")
    np.testing.assert_array_equal(out16, [[0, 3, 255, 9], [255, 255, 15, 255]])
    assert out16.dtype == np.uint8
    out13 = L.remap_to_subset(torch.from_numpy(label).long(), 13)
    assert out13.dtype == torch.int64
    assert out13.tolist() == [[0, 255, 255, 6], [255, 255, 12, 255]]
    assert L.remap_to_subset(torch.tensor([-1, 2]), "19").tolist() == [255, 2]


def test_palette_spot_checks():
    p = L.CITYSCAPES_PALETTE
    assert len(p) == 19 and len(set(p)) == 19
    assert p[0] == (128, 64, 128)  # road
    assert p[10] == (70, 130, 180)  # sky: official colour, not MaxSquare's (0, 130, 180)
    assert p[13] == (0, 0, 142)  # car
    assert p[18] == (119, 11, 32)  # bicycle


def test_colorize():
    rgb = L.colorize(np.array([[0, 10], [255, 18]]))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [70, 130, 180]
    assert rgb[1, 0].tolist() == list(L.IGNORE_COLOR) == [0, 0, 0]
    assert rgb[1, 1].tolist() == [119, 11, 32]
    assert L.colorize(torch.tensor([[3]]), L.CLASS_SETS["13"].palette)[0, 0].tolist() == [250, 170, 30]


def test_encode_labels_maps_valid_ids():
    raw = np.array([[7, 26, 33], [0, 4, 29]], dtype=np.uint8)
    out = L.encode_labels(raw, L.CITYSCAPES_ID_TO_TRAINID, source="cityscapes")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 13, 18], [255, 255, 255]])
    # -1 (license plate) is a valid Cityscapes id that is ignored
    raw_int = np.array([[-1, 8]], dtype=np.int32)
    np.testing.assert_array_equal(L.encode_labels(raw_int, L.CITYSCAPES_ID_TO_TRAINID), [[255, 1]])


def test_encode_labels_rejects_unexpected_ids():
    trainid_png = np.array([[0, 13, 34], [128, 255, 7]], dtype=np.uint8)  # not labelIds
    with pytest.raises(L.LabelError) as err:
        L.encode_labels(trainid_png, L.CITYSCAPES_ID_TO_TRAINID, source="cityscapes")
    msg = str(err.value)
    assert "\n" not in msg
    assert "[34, 128, 255]" in msg and "cityscapes" in msg and "0-33" in msg and "trainIds" in msg
    assert isinstance(err.value, ValueError)
    # non-strict: unknown ids become ignore instead
    out = L.encode_labels(trainid_png, L.CITYSCAPES_ID_TO_TRAINID, strict=False)
    np.testing.assert_array_equal(out, [[255, 4, 255], [255, 255, 0]])  # 13 is fence's labelId
    # SYNTHIA 16-bit ids out of range
    with pytest.raises(L.LabelError, match=r"\[23, 300\].*synthia.*0-22"):
        L.encode_labels(np.array([3, 23, 300], dtype=np.uint16), L.SYNTHIA_ID_TO_TRAINID, source="synthia")
    with pytest.raises(ValueError, match="unknown label source"):
        L.encode_labels(np.zeros(2, dtype=np.uint8), L.CITYSCAPES_ID_TO_TRAINID, source="kitti")


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        L.CITYSCAPES_ID_TO_TRAINID[7] = 3
