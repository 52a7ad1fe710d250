"""MTFL reader: hand-made distributions (zip and folder) with the real files' quirks, and the real data."""
import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from tf_mtvib import runs
from tf_mtvib.datasets import DataError, get_spec, load
from tf_mtvib.datasets import mtfl
from tf_mtvib.train import PRESETS, build_config, parse_args

COLOURS = [(200, 40, 30), (20, 180, 60), (30, 60, 220), (128, 128, 128), (250, 250, 20), (90, 20, 160)]
# path as written in the file, size, mode, labels (1-based, as in the file)
TRAIN = [
    ("lfw_5590\\Aaron_Eckhart_0001.jpg", (40, 40), "RGB", (1, 2, 2, 3)),
    ("lfw_5590\\Grey_Person_0001.jpg", (40, 40), "L", (2, 1, 1, 1)),
    ("net_7876\\_60_991_0.jpg", (30, 48), "RGB", (2, 1, 2, 5)),
    ("net_7876\\_61_1_0.jpg", (48, 30), "RGB", (1, 2, 1, 4)),
]
TEST = [
    ("AFLW/0001-image20056.jpg", (24, 24), "RGB", (1, 1, 2, 2)),
    ("AFLW/0002-image04733.jpg", (24, 24), "RGB", (2, 2, 2, 3)),
]


def jpeg(size, mode, colour) -> bytes:
    image = Image.new("RGB", size, colour)
    buffer = io.BytesIO()
    (image.convert("L") if mode == "L" else image).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def annotation_text(entries, edit=None) -> bytes:
    """As distributed: CRLF, a leading space on every line but the first, a final ' '."""
    lines = []
    for k, (path, _, _, labels) in enumerate(entries):
        coords = " ".join(f"{10 + k + c:.6f}" for c in range(10))
        fields = [path, coords, *map(str, labels)]
        line = " ".join(fields)
        lines.append(edit(k, line) if edit else line)
    return ("\r\n ".join(lines) + "\r\n ").encode("ascii")


def distribution(train_edit=None, test_edit=None):
    """{relative path: bytes} of a tiny MTFL."""
    files = {"training.txt": annotation_text(TRAIN, train_edit), "testing.txt": annotation_text(TEST, test_edit),
             "readme.txt": b"tiny MTFL\r\n"}
    for (path, size, mode, _), colour in zip(TRAIN + TEST, COLOURS):
        files[path.replace("\\", "/")] = jpeg(size, mode, colour)
    return files


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(f"MTFL/{name}", data)
    return path


def write_folder(path, files):
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


@pytest.fixture(params=["zip", "folder"])
def layout(request, tmp_path):
    """Writes a distribution as MTFL.zip or as an extracted MTFL/ folder; returns its path."""
    def write(files):
        if request.param == "zip":
            return write_zip(tmp_path / "MTFL.zip", files)
        return write_folder(tmp_path / "MTFL", files)
    return write


def expected_labels(entries):
    spec = get_spec("mtfl")
    return {t: np.array([e[3][k] - 1 for e in entries]) for k, t in enumerate(spec.task_names)}


# ---------------------------------------------------------------- good data

def test_reads_zip_and_folder_identically(tmp_path, tmp_cache):
    files = distribution()
    from_zip = mtfl.load_mtfl_from(write_zip(tmp_path / "MTFL.zip", files), "train", "official", 16)
    from_dir = mtfl.load_mtfl_from(write_folder(tmp_path / "MTFL", files), "train", "official", 16)
    np.testing.assert_array_equal(from_zip.images, from_dir.images)


def test_official_split_labels_landmarks_pixels(layout, tmp_cache):
    path = layout(distribution())
    for split, entries, colours in (("train", TRAIN, COLOURS[:4]), ("test", TEST, COLOURS[4:])):
        data = mtfl.load_mtfl_from(path, split, "official", image_size=16)
        assert data.images.shape == (len(entries), 16, 16, 3) and data.images.dtype == np.uint8
        assert data.spec.input_shape == (16, 16, 3) and data.spec.task_names == get_spec("mtfl").task_names
        for task, values in expected_labels(entries).items():
            np.testing.assert_array_equal(data.labels[task], values)
            assert data.labels[task].dtype == np.int64
        np.testing.assert_allclose(data.extras["landmarks"][0], 10 + np.arange(10))
        collections = [mtfl.COLLECTIONS[c] for c in data.extras["collection"]]
        assert collections == [e[0].replace("\\", "/").split("/")[0] for e in entries]
        for image, (_, _, mode, _), colour in zip(data.images, entries, colours):
            grey = Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))
            want = np.full(3, grey) if mode == "L" else np.array(colour)
            assert np.abs(image.reshape(-1, 3).mean(0) - want).max() < 8, (image.mean((0, 1)), colour)
            if mode == "L":
                assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])


def test_default_size_comes_from_the_spec(layout, tmp_cache):
    data = mtfl.load_mtfl_from(layout(distribution()), "test", "official")
    assert data.images.shape[1:] == get_spec("mtfl").input_shape and data.spec == get_spec("mtfl")


def test_decoded_once_per_size_and_shared_by_protocols(tmp_path, tmp_cache, monkeypatch):
    path = write_zip(tmp_path / "MTFL.zip", distribution())
    decoded = []
    real = mtfl._decode_one
    monkeypatch.setattr(mtfl, "_decode_one", lambda *a: decoded.append(a[1]) or real(*a))
    first = mtfl.load_mtfl_from(path, "train", "official", 16)
    assert len(decoded) == len(TRAIN) + len(TEST)  # everything, once
    again = mtfl.load_mtfl_from(path, "test", "official", 16)
    assert len(decoded) == len(TRAIN) + len(TEST) and len(again) == len(TEST)
    np.testing.assert_array_equal(mtfl.load_mtfl_from(path, "train", "official", 16).images, first.images)
    mtfl.load_mtfl_from(path, "train", "official", 12)  # another size: another cache entry
    assert len(decoded) == 2 * (len(TRAIN) + len(TEST))
    assert len(list(tmp_cache.glob("mtfl-*.npy"))) == 2


def test_protocols():
    official = mtfl._protocol_indices("official", 10_000, 2_995, seed=0)
    assert official["train"].tolist() == list(range(10_000))
    assert official["test"].tolist() == list(range(10_000, 12_995))
    paper = mtfl._protocol_indices("paper", 10_000, 2_995, seed=0)
    assert (len(paper["train"]), len(paper["test"])) == (9_000, 1_000)
    assert sorted(np.concatenate([paper["train"], paper["test"]]).tolist()) == list(range(10_000))
    np.testing.assert_array_equal(paper["test"], mtfl._protocol_indices("paper", 10_000, 2_995, seed=0)["test"])
    assert not np.array_equal(paper["test"], mtfl._protocol_indices("paper", 10_000, 2_995, seed=1)["test"])
    strata = [np.repeat([0, 1], [4_150, 5_850]), np.arange(10_000) % 2]  # collection x a label
    drawn = mtfl._protocol_indices("paper", 10_000, 2_995, seed=0, strata=strata)
    cells = strata[0][drawn["test"]] * 2 + strata[1][drawn["test"]]
    quota = np.array([2_075, 2_075, 2_925, 2_925]) / 10  # each cell's share of the 1,000: x.5 items
    assert np.all(np.abs(np.bincount(cells) - quota) == 0.5) and len(cells) == 1_000


def test_unknown_collection_is_a_data_error(layout, tmp_cache):
    files = distribution()
    files["training.txt"] = files["training.txt"].replace(b"net_7876\\_61_1_0.jpg", b"other\\_61_1_0.jpg")
    files["other/_61_1_0.jpg"] = files.pop("net_7876/_61_1_0.jpg")
    with pytest.raises(DataError, match="line 4: image other/_61_1_0.jpg is in no MTFL collection"):
        mtfl.load_mtfl_from(layout(files), "train", "official", 8)


# ---------------------------------------------------------------- bad data

def load_error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        mtfl.load_mtfl_from(path, "train", "official", 8, **kw)
    return str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda k, line: line.rsplit(" ", 1)[0] if k == 2 else line, "expected 15 fields.*got 14"),
    (lambda k, line: line + " 1" if k == 2 else line, "got 16"),
    (lambda k, line: line.replace(" 2 1 2 5", " 3 1 2 5") if k == 2 else line, "gender label '3'"),
    (lambda k, line: line.replace(" 2 1 2 5", " 2 1 2 6") if k == 2 else line, "pose label '6'"),
    (lambda k, line: line.replace(" 2 1 2 5", " 2 0 2 5") if k == 2 else line, "smile label '0'"),
    (lambda k, line: line.replace(" 2 1 2 5", " 2 1 x 5") if k == 2 else line, "glasses label 'x'"),
    (lambda k, line: line.replace("12.000000", "twelve") if k == 2 else line, "landmark"),
])
def test_bad_annotation_line_names_file_and_line(layout, tmp_cache, edit, message):
    path = layout(distribution(train_edit=edit))
    text = load_error(path)
    assert "training.txt" in text and str(path) in text and "line 3" in text
    assert re.search(message, text), text


@pytest.mark.parametrize("damage", [lambda b: b"not a jpeg at all", lambda b: b[: len(b) // 2]])
def test_bad_jpeg_names_image_and_line(layout, tmp_cache, damage):
    files = distribution()
    files["net_7876/_61_1_0.jpg"] = damage(files["net_7876/_61_1_0.jpg"])
    path = layout(files)
    text = load_error(path)
    assert "net_7876/_61_1_0.jpg" in text and "training.txt, line 4" in text and str(path) in text
    assert not list(tmp_cache.glob("*.npy")), "no cache entry for a failed decode"


def test_missing_image_checksum_and_count(layout, tmp_cache):
    files = distribution()
    del files["AFLW/0002-image04733.jpg"]
    text = load_error(layout(files))
    assert "testing.txt" in text and "AFLW/0002-image04733.jpg (line 2)" in text


def test_annotation_checksum_and_count_checked(tmp_path, tmp_cache):
    path = write_zip(tmp_path / "MTFL.zip", distribution())
    text = load_error(path, sha256={"training.txt": "0" * 64})
    assert "checksum" in text and "training.txt" in text
    assert "list 6 images, expected 12995" in load_error(path, num_images=12_995)


def test_not_a_zip(tmp_path, tmp_cache):
    path = tmp_path / "MTFL.zip"
    path.write_bytes(b"PK\x03\x04 garbage")
    assert str(path) in load_error(path)


def test_non_ascii_annotation(tmp_path, tmp_cache):
    files = distribution()
    files["testing.txt"] = b"\xff\xfe" + files["testing.txt"]
    assert "testing.txt" in load_error(write_zip(tmp_path / "MTFL.zip", files))


@pytest.mark.parametrize("where", ["mtfl/MTFL.zip", "mtfl/MTFL"])
def test_load_finds_zip_or_folder_and_checks_digests(tmp_path, tmp_cache, where):
    files = distribution()
    (tmp_path / "mtfl").mkdir()
    target = tmp_path / where
    write_zip(target, files) if where.endswith(".zip") else write_folder(target, files)
    with pytest.raises(DataError, match="checksum") as info:
        load("mtfl", "test", tmp_path, image_size=8)
    assert str(target) in str(info.value) and "training.txt" in str(info.value)


# ---------------------------------------------------------------- real data

def real_pose_histogram(data_dir):
    """Parse testing.txt straight from the zip, independently of the reader."""
    with zipfile.ZipFile(data_dir / "mtfl" / "MTFL.zip") as z:
        lines = [l.split() for l in z.read("MTFL/testing.txt").decode().splitlines() if l.strip()]
    return np.bincount([int(f[-1]) - 1 for f in lines], minlength=5)


@pytest.mark.slow
def test_real_official(data_dir):
    train = load("mtfl", "train", data_dir, protocol="official", image_size=32)
    test = load("mtfl", "test", data_dir, protocol="official", image_size=32)
    assert train.images.shape == (10_000, 32, 32, 3) and test.images.shape == (2_995, 32, 32, 3)
    pose = get_spec("mtfl").task("pose")
    histogram = np.bincount(test.labels["pose"], minlength=pose.num_classes)
    np.testing.assert_array_equal(histogram, real_pose_histogram(data_dir))
    assert histogram[pose.class_names.index("frontal")] == 1_825
    for task in get_spec("mtfl").tasks:
        assert 0 <= train.labels[task.name].min() and train.labels[task.name].max() < task.num_classes
    assert train.images.std() > 20  # real pictures, not blank


def test_real_paper(data_dir):
    official = load("mtfl", "train", data_dir, protocol="official", image_size=32)
    train = load("mtfl", "train", data_dir, image_size=32)  # paper is the default
    test = load("mtfl", "test", data_dir, protocol="paper", image_size=32)
    assert (len(train), len(test)) == (9_000, 1_000)
    for task in official.labels:  # both drawn from training.txt, together exactly it
        np.testing.assert_array_equal(
            np.bincount(np.concatenate([train.labels[task], test.labels[task]])),
            np.bincount(official.labels[task]))


@pytest.mark.slow
def test_real_default_size(data_dir):
    test = load("mtfl", "test", data_dir, protocol="official")
    assert test.images.shape == (2_995, *get_spec("mtfl").input_shape)
    assert test.spec == get_spec("mtfl")


# ---------------------------------------------------------------- subsets of the real data

def composition(split):
    """Percent of each collection and of each class of every task."""
    spec = get_spec("mtfl")
    out = {("collection", c): 100 * np.mean(split.extras["collection"] == k) for k, c in enumerate(mtfl.COLLECTIONS)}
    for task in spec.tasks:
        out.update({(task.name, c): 100 * np.mean(split.labels[task.name] == k) for k, c in enumerate(task.class_names)})
    return out


def assert_close_composition(part, whole, points):
    a, b = composition(part), composition(whole)
    worst = max(a, key=lambda k: abs(a[k] - b[k]))
    assert abs(a[worst] - b[worst]) <= points, (worst, a[worst], b[worst])


def test_real_capped_subset_mixes_collections_and_classes(data_dir):
    """The cpu preset's cap: within 3 points of the whole split per collection and class, seeded, not the first rows."""
    config = build_config(parse_args(["--dataset", "mtfl", "--model", "mtvib", "--preset", "cpu", "--seed", "0"]))
    config["data"]["image_size"] = 32  # the smallest size the other real-data tests decode (one cache entry)
    whole = load("mtfl", "train", data_dir, image_size=32)
    capped = runs.load_split(config, "train", data_dir)
    cap = PRESETS["cpu"]["data"]["mtfl"]["max_train"]
    assert len(capped) == cap < len(whole)
    assert_close_composition(capped, whole, 3.0)
    first = whole.take(cap)
    assert not np.array_equal(capped.extras["landmarks"], first.extras["landmarks"])
    assert composition(first)[("collection", "net_7876")] == 0  # why: the first rows are all lfw_5590
    again = runs.load_split(config, "train", data_dir)
    np.testing.assert_array_equal(again.extras["landmarks"], capped.extras["landmarks"])
    config["subsets"] = runs.subsets_record(1)
    other = runs.load_split(config, "train", data_dir)
    assert not np.array_equal(other.extras["landmarks"], capped.extras["landmarks"])
    assert_close_composition(other, whole, 3.0)


def test_real_paper_draw_is_stratified(data_dir):
    official = load("mtfl", "train", data_dir, protocol="official", image_size=32)
    test = load("mtfl", "test", data_dir, image_size=32)
    train = load("mtfl", "train", data_dir, image_size=32)
    assert_close_composition(test, official, 0.5)
    assert_close_composition(train, official, 0.1)
    for collection in (0, 1):  # both collections of training.txt in both parts, in proportion
        assert abs(np.mean(test.extras["collection"] == collection)
                   - np.mean(official.extras["collection"] == collection)) < 0.002
