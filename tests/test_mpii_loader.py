"""MPII loader on hand-built quirk fixtures (DESIGN.md §7), one case per quirk.

`mat()` below builds the nested numpy arrays BY HAND in the shape scipy.io.loadmat returns for a
MATLAB file (squeeze_me=False, struct_as_record=True): every struct is a (1, k) structured array of
object fields, numbers are 2-D arrays, strings are (1,) unicode arrays, [] is a (0, 0) double.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.io.matlab import mat_struct

from t2i_debias.data import matreader
from t2i_debias.data.mpii import MpiiFormatError, parse_release
from t2i_debias.data.mpii_fixture import ABSENT, FixtureImage, FixturePerson, FixturePoint, write_fixture
from t2i_debias.data.occupations import OccupationMap
from t2i_debias.data.persons import PERSONS_COLUMNS, select_persons

EMPTY = np.zeros((0, 0))


def S(fields: list[str], *records: dict) -> np.ndarray:
    """A 1xk MATLAB struct array as loadmat returns it; absent keys are [] (0x0 double)."""
    arr = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, rec in enumerate(records):
        for f in fields:
            arr[0, i][f] = rec.get(f, EMPTY)
    return arr


def n(v, dtype=np.float64) -> np.ndarray:
    return np.array([[v]], dtype=dtype)


def t(s: str) -> np.ndarray:
    return np.array([s]) if s else np.array([], dtype="<U1")


def act(cat: str = "occupation", name: str = "cook, chef", aid: int = 7, order=("cat_name", "act_name", "act_id")):
    vals = {"cat_name": t(cat), "act_name": t(name), "act_id": n(aid, np.int16)}
    return S(list(order), vals)


def rect(x1=10, y1=20, x2=50, y2=70, scale=1.5, objpos=(30.0, 90.0), points=None) -> dict:
    """One annorect record with head box, scale, objpos (and annopoints when points given)."""
    rec = {"x1": n(x1, np.uint16), "y1": n(y1, np.uint16), "x2": n(x2, np.uint16), "y2": n(y2, np.uint16),
           "scale": n(scale), "objpos": S(["x", "y"], {"x": n(objpos[0]), "y": n(objpos[1])})}
    if points is not None:
        rec["annopoints"] = S(["point"], {"point": points}) if points is not EMPTY else EMPTY
    return rec


RECT_FIELDS = ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"]


def mat(images: list[dict]) -> dict:
    """{"RELEASE": ...} for images given as dicts: name, annorect, train, act, single, vididx, frame_sec."""
    N = len(images)
    annolist = S(["image", "annorect", "frame_sec", "vididx"], *[
        {"image": S(["name"], {"name": t(im.get("name", f"{i:09d}.jpg"))}),
         "annorect": im.get("annorect", EMPTY),
         "frame_sec": im.get("frame_sec", EMPTY), "vididx": im.get("vididx", EMPTY)}
        for i, im in enumerate(images)])
    single = np.empty((N, 1), dtype=object)
    acts = []
    for i, im in enumerate(images):
        sp = im.get("single", [])
        single[i, 0] = np.array(sp, dtype=np.uint8).reshape(-1, 1) if sp else EMPTY
        acts.append(im.get("act", act()))
    act_arr = np.empty((N, 1), dtype=acts[0].dtype if N else [("act_id", object)])
    for i, a in enumerate(acts):
        act_arr[i, 0] = a[0, 0]
    release = S(["annolist", "img_train", "version", "single_person", "act", "video_list"], {
        "annolist": annolist,
        "img_train": np.array([[im.get("train", 1) for im in images]], dtype=np.uint8),
        "version": t("12"), "single_person": single, "act": act_arr,
        "video_list": np.array([[t("abc")]], dtype=object)})
    return {"__header__": b"", "__version__": "1.0", "__globals__": [], "RELEASE": release}


def parse(images: list[dict], keypoints: bool = False):
    return parse_release(mat(images), keypoints=keypoints, source="hand.mat")


# ----------------------------------------------------------------------------- annorect shapes
def test_empty_annorect_has_no_people():
    rel = parse([{"annorect": EMPTY}, {"annorect": S(RECT_FIELDS, rect())}])
    assert rel.images_without_people == 1
    assert [(p.image_index, p.ridx) for p in rel.persons] == [(1, 1)]


def test_single_struct_annorect_is_one_person():
    (p,) = parse([{"annorect": S(RECT_FIELDS, rect(x1=11))}]).persons
    assert (p.ridx, p.n_people, p.head_box) == (1, 1, (11.0, 20.0, 50.0, 70.0))


def test_array_annorect_gives_ridx_1_to_k():
    rel = parse([{"annorect": S(RECT_FIELDS, rect(x1=1), rect(x1=2), rect(x1=3))}])
    assert [(p.ridx, p.n_people, p.head_box[0]) for p in rel.persons] == [(1, 3, 1.0), (2, 3, 2.0), (3, 3, 3.0)]


def _ms(**fields) -> mat_struct:
    """A scipy mat_struct, as loadmat(squeeze_me=True, struct_as_record=False) returns."""
    s = mat_struct()
    s._fieldnames = list(fields)
    for k, v in fields.items():
        setattr(s, k, v)
    return s


def test_squeezed_bare_struct_person_and_scalars():
    """squeeze_me=True: one person is a bare struct, numbers are Python/numpy scalars, ridx a scalar."""
    person = _ms(x1=np.uint16(5), y1=6, x2=40.5, y2=np.uint8(60), scale=2.0, objpos=_ms(x=1.0, y=2.0),
                 annopoints=_ms(point=_ms(x=-3.5, y=4, id=np.uint8(9), is_visible="1")))
    two = np.array([_ms(scale=1.0, objpos=_ms(x=1, y=1)), _ms(scale=2.0, objpos=np.array([]))], dtype=object)
    rel = _ms(annolist=np.array([_ms(image=_ms(name="000000001.jpg"), annorect=person, frame_sec=np.array([]),
                                     vididx=np.array([])),
                                 _ms(image=_ms(name="000000002.jpg"), annorect=two, frame_sec=3.0,
                                     vididx=np.uint16(700))], dtype=object),
              img_train=np.array([1, 0], dtype=np.uint8), version="12",
              single_person=np.array([np.uint8(1), np.array([1, 2], dtype=np.uint8)], dtype=object),
              act=np.array([_ms(cat_name="occupation", act_name="cook, chef", act_id=7),
                            _ms(act_id=-1, cat_name=np.array([]), act_name=np.array([]))], dtype=object),
              video_list=np.array(["a"], dtype=object))
    out = parse_release({"RELEASE": rel}, keypoints=True).persons
    assert [(p.image, p.ridx, p.n_people, p.single_person, p.split) for p in out] == [
        ("000000001.jpg", 1, 1, True, "train"), ("000000002.jpg", 1, 2, True, "test"),
        ("000000002.jpg", 2, 2, True, "test")]
    assert out[0].head_box == (5.0, 6.0, 40.5, 60.0) and out[0].points == [(9, -3.5, 4.0, 1)]
    assert out[2].objpos is None and out[2].head_box is None
    assert (out[1].act_id, out[1].activity, out[1].category) == (-1, "", "")


# ----------------------------------------------------------------------------- absent / partial fields
def test_absent_fields_test_image_scale_objpos_only():
    """Test images have no x1..y2 and no annopoints at all (not even empty)."""
    r = S(["scale", "objpos"], {"scale": n(3.25), "objpos": S(["x", "y"], {"x": n(600, np.uint16), "y": n(7.5)})})
    (p,) = parse([{"annorect": r, "train": 0}], keypoints=True).persons
    assert (p.split, p.head_box, p.scale, p.objpos, p.points) == ("test", None, 3.25, (600.0, 7.5), [])


def test_head_box_only_person():
    r = S(RECT_FIELDS, rect(), {"x1": n(1, np.uint8), "y1": n(2, np.uint8), "x2": n(30, np.uint8),
                                "y2": n(40, np.uint8), "annopoints": EMPTY})
    rel = parse([{"annorect": r}], keypoints=True)
    p = rel.persons[1]
    assert (p.head_box, p.scale, p.objpos, p.points) == ((1.0, 2.0, 30.0, 40.0), None, None, [])
    rows, rep = select_persons(rel, OccupationMap({"cook, chef": "chef"}), "train", True, set())
    assert [rows[1][c] for c in PERSONS_COLUMNS[9:16]] == [1.0, 2.0, 30.0, 40.0, "", "", ""]


# ----------------------------------------------------------------------------- keypoints
def _pt(pid, x, y, vis=None, with_vis=True) -> dict:
    d = {"id": n(pid, np.uint8), "x": x, "y": y}
    if with_vis:
        d["is_visible"] = EMPTY if vis is None else vis
    return d


def test_point_single_struct_vs_array():
    one = S(["x", "y", "id", "is_visible"], _pt(0, n(1.0), n(2.0), n(1, np.uint8)))
    many = S(["x", "y", "id", "is_visible"], *[_pt(k, n(float(k)), n(2.0), n(1, np.uint8)) for k in range(3)])
    rel = parse([{"annorect": S(RECT_FIELDS, rect(points=one), rect(points=many))}], keypoints=True)
    assert [len(p.points) for p in rel.persons] == [1, 3]
    assert rel.persons[1].points[2] == (2, 2.0, 2.0, 1)


def test_is_visible_numeric_string_empty_absent():
    pts = S(["x", "y", "id", "is_visible"], _pt(0, n(1.0), n(1.0), n(1, np.uint8)), _pt(1, n(1.0), n(1.0), t("0")),
            _pt(2, n(1.0), n(1.0), t("1")), _pt(3, n(1.0), n(1.0), n(0.0)), _pt(4, n(1.0), n(1.0), None))
    absent = S(["x", "y", "id"], _pt(5, n(1.0), n(1.0), with_vis=False))
    rel = parse([{"annorect": S(RECT_FIELDS, rect(points=pts), rect(points=absent))}], keypoints=True)
    assert [v for _, _, _, v in rel.persons[0].points] == [1, 0, 1, 0, None]
    assert rel.persons[1].points == [(5, 1.0, 1.0, None)]


def test_negative_and_float_coordinates():
    pts = S(["x", "y", "id", "is_visible"], _pt(8, n(-12, np.int16), n(-0.5), n(1, np.uint8)),
            _pt(9, n(641.25), n(3, np.uint8), n(1, np.uint8)))
    r = rect(points=pts)
    r["x1"] = n(-4.75)
    (p,) = parse([{"annorect": S(RECT_FIELDS, r)}], keypoints=True).persons
    assert p.head_box[0] == -4.75 and p.points == [(8, -12.0, -0.5, 1), (9, 641.25, 3.0, 1)]


def test_unsigned_integers_do_not_wrap():
    r = rect(x1=250, x2=300)  # uint16 values; width computed from them must not wrap
    r["y1"], r["y2"] = n(200, np.uint8), n(255, np.uint8)
    (p,) = parse([{"annorect": S(RECT_FIELDS, r), "single": [1]}]).persons
    x1, y1, x2, y2 = p.head_box
    assert (x2 - x1, y2 - y1) == (50.0, 55.0) and all(type(v) is float for v in p.head_box)


# ----------------------------------------------------------------------------- act
def test_act_fields_by_name_in_any_order():
    a1 = act("occupation", "roofing", 12, order=("act_id", "act_name", "cat_name"))
    (p,) = parse([{"annorect": S(RECT_FIELDS, rect()), "act": a1}]).persons
    assert (p.category, p.activity, p.act_id) == ("occupation", "roofing", 12)


def test_empty_act_is_minus_one_and_counted_as_no_activity():
    empty_act = S(["cat_name", "act_name", "act_id"], {"act_id": n(-1, np.int16)})  # names are []
    rel = parse([{"annorect": S(RECT_FIELDS, rect()), "act": empty_act, "train": 1}])
    p = rel.persons[0]
    assert (p.act_id, p.activity, p.category) == (-1, "", "")
    rows, rep = select_persons(rel, OccupationMap({"cook, chef": "chef"}), "train", True, set())
    assert rows == [] and rep["not_written"]["no_activity"] == 1
    rows, _ = select_persons(rel, OccupationMap({}), "train", False, set())
    assert rows[0]["act_id"] == -1 and rows[0]["occupation"] == ""


def test_mangled_act_name_still_maps():
    """act_name cut at 100 chars with slashes stripped still finds its occupation."""
    full = ("fire fighter, hauling hoses on ground, carrying/hoisting equipment, breaking down walls etc., "
            "wearing full gear")
    occ = OccupationMap({full[:100]: "firefighter"})
    mangled = full.replace("/", "")[:100]
    rel = parse([{"annorect": S(RECT_FIELDS, rect()), "act": act("occupation", mangled)}])
    rows, rep = select_persons(rel, occ, "train", True, set())
    assert rows[0]["occupation"] == "firefighter" and rep["unmapped_activities"] == {}


# ----------------------------------------------------------------------------- indices / video / names
def test_single_person_scalar_array_and_empty():
    three = S(RECT_FIELDS, rect(), rect(), rect())
    rel = parse([{"annorect": three, "single": [2]}, {"annorect": three, "single": [1, 3]},
                 {"annorect": three, "single": []}])
    flags = [int(p.single_person) for p in rel.persons]
    assert flags == [0, 1, 0, 1, 0, 1, 0, 0, 0]


def test_single_person_scalar_hand_built_1x1():
    m = mat([{"annorect": S(RECT_FIELDS, rect(), rect())}])
    m["RELEASE"][0, 0]["single_person"][0, 0] = n(2, np.uint8)  # a bare 1x1, not a column
    assert [p.single_person for p in parse_release(m).persons] == [False, True]


def test_vididx_and_frame_sec_empty_together():
    rel = parse([{"annorect": S(RECT_FIELDS, rect()), "vididx": n(12, np.uint16), "frame_sec": n(4.0)},
                 {"annorect": S(RECT_FIELDS, rect())}])
    assert "video_fields_inconsistent" not in rel.stats
    rel = parse([{"annorect": S(RECT_FIELDS, rect()), "vididx": n(12, np.uint16)}])
    assert rel.stats["video_fields_inconsistent"] == 1


def test_nine_digit_names_kept_and_bad_names_reported():
    rel = parse([{"name": "000001234.jpg", "annorect": S(RECT_FIELDS, rect())},
                 {"name": "img_7.jpg", "annorect": S(RECT_FIELDS, rect())},
                 {"name": "../etc/passwd", "annorect": S(RECT_FIELDS, rect())}])
    rows, rep = select_persons(rel, OccupationMap({"cook, chef": "chef"}), "all", True, {"000001234.jpg"})
    assert [r["image"] for r in rows] == ["000001234.jpg", "img_7.jpg"]
    assert [r["image_exists"] for r in rows] == [1, 0]
    assert rep["not_written"]["bad_image_name"] == 1 and rep["nonstandard_image_names"] == ["img_7.jpg"]


def test_split_and_reasons_add_up():
    imgs = [{"annorect": S(RECT_FIELDS, rect(), rect()), "train": 1},
            {"annorect": S(RECT_FIELDS, rect()), "train": 0},
            {"annorect": S(RECT_FIELDS, rect()), "act": act("sports", "curling", 3)},
            {"annorect": S(RECT_FIELDS, rect()), "act": act("sports", "zorbing", 4)}]
    rel = parse(imgs)
    occ = OccupationMap({"cook, chef": "chef", "curling": None})
    rows, rep = select_persons(rel, occ, "train", True, set())
    assert len(rows) == 2 and rep["not_written"] == {
        "wrong_split": 1, "bad_image_name": 0, "no_activity": 0, "unmapped_activity": 1, "not_occupation": 1}
    assert rep["unmapped_activities"] == {"zorbing": 1}
    assert rep["persons_written"] + sum(rep["not_written"].values()) == rep["persons_in_file"] == 5
    rows, rep = select_persons(rel, occ, "test", True, set())
    assert [r["split"] for r in rows] == ["test"]
    rows, _ = select_persons(rel, occ, "all", False, set())
    assert len(rows) == 5


def test_format_errors_name_the_element():
    imgs = [{"annorect": S(RECT_FIELDS, rect())}, {"annorect": S(RECT_FIELDS, rect())}]
    m = mat(imgs)
    m["RELEASE"][0, 0]["annolist"][0, 1]["annorect"][0, 0]["x1"] = t("abc")
    with pytest.raises(MpiiFormatError, match=r"annolist\(2\)\.annorect\(1\)\.x1"):
        parse_release(m, source="hand.mat")
    m = mat(imgs)
    m["RELEASE"][0, 0]["img_train"] = np.array([[1]], dtype=np.uint8)
    with pytest.raises(MpiiFormatError, match="img_train has 1 entries, annolist has 2"):
        parse_release(m, source="hand.mat")
    with pytest.raises(MpiiFormatError, match="no RELEASE"):
        parse_release({"other": 1}, source="hand.mat")


# ----------------------------------------------------------------------------- readers agree
def _quirky_images() -> list[FixtureImage]:
    P = FixturePoint
    return [
        FixtureImage("000000001.jpg", "occupation", "cook, chef", 7, [
            FixturePerson((1, 2, 30, 40), 1.5, (10.0, 20.0), [P(0, 1, 2, 1), P(1, -3.5, 4.25, "0"), P(2, 5, 6, None)]),
            FixturePerson((1.5, 2.5, 30.5, 40.5), None, None, [])], vididx=3, frame_sec=1.5),
        FixtureImage("000000002.jpg", "", "", -1, [], train=True),
        FixtureImage("000000003.jpg", "occupation", "roofing", 9, [
            FixturePerson(None, 2.0, (1.0, 2.0)), FixturePerson(None, 3.0, (3.0, 4.0))], train=False,
            single_person=[1, 2]),
        FixtureImage("000000004.jpg", "home repair", "roofing", 9, [
            FixturePerson((70000, 2, 3, 4), 1.0, (5.0, 6.0), [P(3, 7, 8, ABSENT)])], single_person=[1]),
        FixtureImage("000000005.jpg", "home repair", "roofing", 9, [
            FixturePerson((1, 2, 3, 4), 1.0, (5.0, 6.0), [P(4, 7.5, 8, 1), P(5, 0, 0, 0)])]),
    ]


@pytest.mark.parametrize("order", [("cat_name", "act_name", "act_id"), ("act_id", "cat_name", "act_name")])
@pytest.mark.parametrize("empty_names", ["empty", "string"])
def test_fast_reader_and_all_loadmat_modes_agree(tmp_path: Path, order, empty_names):
    mat_path, _ = write_fixture(tmp_path, _quirky_images(), write_images=False, act_field_order=order,
                                empty_act_names=empty_names)
    ref = parse_release(matreader.read_mat(mat_path), keypoints=True).persons
    assert len(ref) == 6 and ref[0].points[1] == (1, -3.5, 4.25, 0) and ref[0].points[2][3] is None
    assert ref[1].points == [] and ref[1].scale is None and ref[2].points == [] and ref[3].split == "test"
    assert ref[4].head_box[0] == 70000.0 and ref[4].points == [(3, 7.0, 8.0, None)]
    assert ref[5].points == [(4, 7.5, 8.0, 1), (5, 0.0, 0.0, 0)]
    for sq in (False, True):
        for rec in (False, True):
            m = scipy.io.loadmat(mat_path, squeeze_me=sq, struct_as_record=rec)
            assert parse_release(m, keypoints=True).persons == ref, (sq, rec)


def _el(mtype: int, data: bytes) -> bytes:
    """A MAT v5 data element (full tag), padded to 8 bytes."""
    return struct.pack("<II", mtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _small(mtype: int, data: bytes) -> bytes:
    """A small data element (<= 4 bytes of data packed into the tag)."""
    return struct.pack("<HH", mtype, len(data)) + data + b"\0" * (4 - len(data))


def _matrix(cls: int, dims: tuple[int, int], body: bytes, name: bytes = b"") -> bytes:
    head = _el(6, struct.pack("<II", cls, 0)) + _el(5, struct.pack("<ii", *dims))
    head += _small(1, name) if 0 < len(name) <= 4 else _el(1, name)
    return _el(14, head + body)


def test_fast_reader_matlab_storage_types(tmp_path: Path):
    """MATLAB (unlike savemat) stores doubles in the smallest integer type, uses small data elements
    and UTF-8 / UTF-16 chars; the reader must give what loadmat gives."""
    fields = b"a\0\0\0\0\0\0\0b\0\0\0\0\0\0\0c\0\0\0\0\0\0\0"
    a = _matrix(6, (1, 1), _small(2, bytes([200])))  # double 200 stored as miUINT8
    b = _matrix(4, (1, 3), _el(16, b"abc"))  # char as miUTF8
    c = _matrix(6, (1, 2), _el(3, struct.pack("<hh", -5, 7)))  # double stored as miINT16
    body = _small(5, struct.pack("<i", 8)) + _el(1, fields) + a + b + c
    rel = _matrix(2, (1, 1), body, name=b"RELEASE")
    header = b"MATLAB 5.0 MAT-file, hand made".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    p = tmp_path / "hand.mat"
    z = zlib.compress(rel)
    p.write_bytes(header + struct.pack("<II", 15, len(z)) + z)  # compressed elements are not padded
    got = matreader.read_mat(p)["RELEASE"]
    assert got == [{"a": 200.0, "b": "abc", "c": (-5.0, 7.0)}]
    ref = scipy.io.loadmat(p)["RELEASE"][0, 0]
    assert float(ref["a"][0, 0]) == 200.0 and ref["b"][0] == "abc" and ref["c"].tolist() == [[-5.0, 7.0]]


def test_fast_reader_rejects_v73(tmp_path: Path):
    p = tmp_path / "v73.mat"
    p.write_bytes(b"MATLAB 7.3 MAT-file".ljust(124, b" ") + struct.pack("<H", 0x0200) + b"IM" + b"\0" * 400)
    with pytest.raises(matreader.MatFormatError, match="not v5"):
        matreader.read_mat(p)
