"""scripts/fetch_data.py: its parsers on hand-written input, and the fetched data in data/ when it is there.

The data checks skip (saying how to fetch) when a dataset's ``data/NAME/.done`` stamp is missing.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def _load_fetch_data():
    """Import scripts/fetch_data.py (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("fetch_data", REPO / "scripts" / "fetch_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_data"] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


fd = _load_fetch_data()


def need(name: str) -> Path:
    """The dataset's folder, or skip the test when it has not been fetched (completely)."""
    if not (DATA / name / ".done").is_file():
        pytest.skip(f"data/{name} not fetched: run `python scripts/fetch_data.py --only {name}`")
    return DATA / name


# ---------------------------------------------------------------------------------------------------------------
# Parsers (no data needed)
# ---------------------------------------------------------------------------------------------------------------

def test_ding_line_strips_annotations_and_pairs_alternatives():
    line = ("Aal {m} | Er ließ sich  durch die Verspätung {f} nicht aus der Ruhe bringen. [übtr.] :: "
            "eel | He was unfazed <unfazed> by the delay. [coll.]\n")
    assert fd.parse_ding_line(line) == [
        ("Er ließ sich durch die Verspätung nicht aus der Ruhe bringen.", "He was unfazed by the delay.")]


def test_ding_line_filters():
    # fewer than 4 German words; no sentence end on the English side; no sentence end on the German side
    assert fd.parse_ding_line("Das ist gut. :: That is good.") == []
    assert fd.parse_ding_line("Das ist sehr gut so. :: that is very good") == []
    assert fd.parse_ding_line("Das ist sehr gut so :: That is very good.") == []
    # a question and an exclamation are sentences too
    assert fd.parse_ding_line("Wie geht es dir heute? :: How are you today?") == [
        ("Wie geht es dir heute?", "How are you today?")]
    assert fd.parse_ding_line("Das lasse ich mir nicht bieten! :: I won't stand for it!") == [
        ("Das lasse ich mir nicht bieten!", "I won't stand for it!")]


def test_ding_line_keeps_first_synonym_and_ignores_non_entries():
    line = "Jetzt reicht es mir aber wirklich!; Verdammt noch mal! :: That's quite enough now!; Dammit!"
    assert fd.parse_ding_line(line) == [("Jetzt reicht es mir aber wirklich!", "That's quite enough now!")]
    assert fd.parse_ding_line("# Version :: devel 2023-01-30") == []
    assert fd.parse_ding_line("# 1995 - 2023") == []
    assert fd.parse_ding_line("no separator here at all.") == []
    # an annotation-only German side leaves nothing
    assert fd.parse_ding_line("{f} [ugs.] :: Something is here.") == []


def test_ding_alternatives_pair_by_position():
    line = ("Haus {n} | Das Haus ist sehr alt. | Wir gehen jetzt nach Hause. :: house | The house is very old. | "
            "We are going home now.")
    assert fd.parse_ding_line(line) == [("Das Haus ist sehr alt.", "The house is very old."),
                                        ("Wir gehen jetzt nach Hause.", "We are going home now.")]


def test_parse_ding_dedupes_and_split_is_deterministic(tmp_path):
    lines = [f"Das ist der Satz Nummer {i}. :: This is sentence number {i}." for i in range(50)]
    (tmp_path / "de-en").write_text("# header\n" + "\n".join(lines + lines[:10]) + "\n", encoding="utf-8")
    pairs = fd.parse_ding(tmp_path / "de-en")
    assert len(pairs) == 50
    splits = fd.split_pairs(pairs, n_test=5, n_valid=7, seed=0)
    assert [len(splits[k]) for k in ("test", "valid", "train")] == [5, 7, 38]
    assert splits == fd.split_pairs(pairs, n_test=5, n_valid=7, seed=0)
    assert sorted(p for split in splits.values() for p in split) == sorted(pairs)


def test_sword_markup_cleaning():
    markup = ('<chapter n="1" sID="Gen.1"/>In the <w lemma="strong:H7225">beginning</w>, <w>God</w>.'
              '<note placement="foot"><reference>1.1</reference>a note</note> \u00b6 <w>hay allí</w>'
              '<transChange type="added">también</transChange> <title>A title</title>end')
    assert fd.clean_sword_text(markup) == "In the beginning, God. hay allí también end"


def test_tile_boxes_centre_rule_and_clipping():
    objects = [("Tree", [190.0, 10.0, 230.0, 50.0]),  # centre x 210: belongs to the next tile, not this one
               ("Dead", [170.0, 20.0, 220.0, 60.0]),  # centre x 195: this tile, clipped at x = 200
               ("Tree", [10.0, 10.0, 30.0, 30.0])]
    assert fd.tile_boxes(objects, 0, 0) == [("Dead", [170.0, 20.0, 200.0, 60.0]), ("Tree", [10.0, 10.0, 30.0, 30.0])]
    assert fd.tile_boxes(objects, 200, 0) == [("Tree", [0.0, 10.0, 30.0, 50.0])]
    assert fd.tile_boxes(objects, 0, 200) == []


def test_box_overlap_limits():
    assert fd.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert fd.boxes_compatible((0, 0, 10, 10), [(20, 20, 30, 30)])
    assert not fd.boxes_compatible((0, 0, 10, 10), [(2, 0, 12, 10)])  # IoU 0.67
    assert not fd.boxes_compatible((10, 10, 20, 20), [(0, 0, 40, 40)])  # IoU 0.06 but wholly inside


def test_make_scene_boxes_fit_and_respect_overlap():
    np = pytest.importorskip("numpy")
    pytest.importorskip("PIL")
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[:, 4:24, 6:22] = 200
    labels = np.array([0, 5, 9])
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene, objects = fd.make_scene(rng, images, labels)
        assert scene.shape == (128, 128, 3) and scene.dtype == np.uint8
        assert 1 <= len(objects) <= 4
        boxes = [box for box, _ in objects]
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            assert fd.boxes_compatible(boxes[i], boxes[:i] + boxes[i + 1:])
        assert all(cls in (0, 5, 9) for _, cls in objects)


# ---------------------------------------------------------------------------------------------------------------
# Fetched data
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,count", [("train", 60000), ("t10k", 10000)])
def test_fashion_mnist_idx_files(prefix, count):
    root = need("fashion-mnist")
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "rb") as f:
        images = f.read()
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "rb") as f:
        labels = f.read()
    assert struct.unpack(">IIII", images[:16]) == (2051, count, 28, 28)
    assert len(images) == 16 + count * 28 * 28
    assert struct.unpack(">II", labels[:8]) == (2049, count)
    assert len(labels) == 8 + count
    per_class = [labels[8:].count(bytes([c])) for c in range(10)]
    assert per_class == [count // 10] * 10  # Fashion-MNIST is balanced


def test_mnist_pickle_shapes():
    root = need("mnist")
    np = pytest.importorskip("numpy")
    with gzip.open(root / "mnist.pkl.gz", "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    assert len(splits) == 3
    for (x, y), n in zip(splits, (50000, 10000, 10000)):
        assert x.shape == (n, 784) and y.shape == (n,)
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() < 1.0
        assert set(np.unique(y).tolist()) == set(range(10))


@pytest.mark.parametrize("name,src,tgt,min_train", [("ding-de-en", "de", "en", 15000),
                                                    ("sword-en-es", "en", "es", 25000)])
def test_parallel_text(name, src, tgt, min_train):
    root = need(name)
    splits = {}
    for split in ("train", "valid", "test"):
        a = (root / f"{split}.{src}").read_text(encoding="utf-8").split("\n")
        b = (root / f"{split}.{tgt}").read_text(encoding="utf-8").split("\n")
        assert a[-1] == "" and b[-1] == ""  # files end with a newline
        a, b = a[:-1], b[:-1]
        assert len(a) == len(b), f"{split}: {len(a)} {src} lines, {len(b)} {tgt} lines"
        assert all(s.strip() == s and s for s in a + b), f"{split}: empty or untrimmed line"
        splits[split] = set(zip(a, b))
    assert len(splits["valid"]) == len(splits["test"]) == 1000
    assert len(splits["train"]) > min_train
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["valid"])
    if name == "ding-de-en":
        assert all(len(de.split()) >= 4 and de[-1] in ".?!" and en[-1] in ".?!" for de, en in splits["test"])


def load_coco(path: Path) -> dict:
    """The COCO file through pycocotools when installed (it checks more), else as plain json."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        return json.loads(path.read_text())
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
        return COCO(str(path)).dataset


COCO_SETS = [("fmnist-det", "train", "images/train"), ("fmnist-det", "test", "images/test"),
             ("deepforest", "train", "tiles"), ("deepforest", "test", "tiles")]


@pytest.mark.parametrize("name,split,image_dir", COCO_SETS)
def test_coco_annotations(name, split, image_dir):
    root = need(name)
    coco = load_coco(root / "annotations" / f"{split}.json")
    categories = {c["id"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    assert images and coco["annotations"]
    assert len(images) == len(coco["images"])
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert ann["category_id"] in categories
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"], ann
        assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
    annotated = {ann["image_id"] for ann in coco["annotations"]}
    assert annotated == set(images), "every image has at least one box"
    for im in images.values():
        assert (root / image_dir / im["file_name"]).is_file(), im["file_name"]
    PIL = pytest.importorskip("PIL.Image")
    for im in list(images.values())[:: max(1, len(images) // 20)]:  # opening reads the header only
        with PIL.open(root / image_dir / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]) and img.mode == "RGB"


def test_fmnist_det_categories_and_counts():
    root = need("fmnist-det")
    params = json.loads((root / ".done").read_text())["params"]
    for split in ("train", "test"):
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        assert [(c["id"], c["name"]) for c in coco["categories"]] == list(enumerate(fd.FASHION_CLASSES, start=1))
        assert len(coco["images"]) == params[split]
        per_image = {}
        for ann in coco["annotations"]:
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        assert 1 <= min(per_image.values()) and max(per_image.values()) <= 4
    assert "synthetic" in (root / "README.txt").read_text().lower()


def test_deepforest_split_by_source_image():
    root = need("deepforest")
    sources = {}
    for split in ("train", "test"):
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        sources[split] = {im["source_image"] for im in coco["images"]}
        assert {c["name"] for c in coco["categories"]} == {"Tree"}
        for im in coco["images"]:  # tile names carry their source image too
            assert im["file_name"].startswith(Path(im["source_image"]).stem + "_x")
    assert sources["train"] and sources["test"]
    assert not sources["train"] & sources["test"], "train and test tiles share a source image"
    for stem in fd.DEEPFOREST_TRAIN + fd.DEEPFOREST_TEST:
        assert (root / "raw" / f"{stem}.png").is_file() and (root / "raw" / f"{stem}.xml").is_file()
