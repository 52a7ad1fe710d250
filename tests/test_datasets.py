"""Data layer: paths, IDX reader, composites and their cache, splits, pipeline, missing files."""
import gzip
import hashlib
import pathlib
import time

import numpy as np
import pytest

from tf_mtvib import runs
from tf_mtvib.datasets import (SUBSET_RULE, DataError, Split, cache_dir, get_spec, load, make_composites,
                               resolve_data_dir, stratified_indices, to_dataset, train_val_split)
from tf_mtvib.datasets import fetch, mnist, mtfl
from tf_mtvib.datasets.__main__ import main as cli_main
from tf_mtvib.datasets.idx import read_idx


# ---------------------------------------------------------------- paths

def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("TF_MTVIB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "tf_mtvib" / "data"


def test_cache_dir_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TF_MTVIB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tf_mtvib" / "cache"


# ---------------------------------------------------------------- IDX reader

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: pathlib.Path, data: bytes, compress: bool) -> pathlib.Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


ARRAY = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip_and_checksum(tmp_path, compress):
    data = idx_bytes(ARRAY)
    path = write_idx(tmp_path / "x-idx3-ubyte", data, compress)
    out = read_idx(path, sha256=hashlib.sha256(data).hexdigest(), shape=(None, 3, 4))
    np.testing.assert_array_equal(out, ARRAY)
    assert out.dtype == np.uint8


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    path = write_idx(tmp_path / "no-suffix", idx_bytes(ARRAY), compress=True)
    np.testing.assert_array_equal(read_idx(path), ARRAY)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("corrupt, message", [
    (lambda d: b"\x00\x00\x09" + d[3:], "magic"),          # type code not uint8
    (lambda d: b"\x12\x34" + d[2:], "magic"),               # not an IDX file at all
    (lambda d: d[:-5], "truncated"),                        # data cut short
    (lambda d: d[:9], "truncated"),                         # header cut short
    (lambda d: d + b"\x00", "trailing"),                    # extra bytes
    (lambda d: b"", "magic"),                               # empty
])
def test_idx_corrupt_raises_naming_file(tmp_path, compress, corrupt, message):
    path = write_idx(tmp_path / "bad-idx3-ubyte", corrupt(idx_bytes(ARRAY)), compress)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(ARRAY))[:-12])
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_wrong_checksum_and_shape(tmp_path):
    path = write_idx(tmp_path / "x.gz", idx_bytes(ARRAY), compress=True)
    with pytest.raises(DataError, match="checksum") as info:
        read_idx(path, sha256="0" * 64)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="shape") as info:
        read_idx(path, shape=(2, 4, 3))
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- composites

def tiny_sources(n=60, size=8, classes=5, seed=0):
    """Random non-zero images with balanced labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, size=(n, size, size, 1), dtype=np.uint8)
    return images, np.arange(n) % classes


def naive_composite(images, i, j, off_tl, off_br, canvas):
    """One composite, the slow obvious way."""
    h, w = images.shape[1:3]
    a = np.zeros((canvas, canvas), np.uint8)
    b = np.zeros((canvas, canvas), np.uint8)
    a[off_tl[0]:off_tl[0] + h, off_tl[1]:off_tl[1] + w] = images[i, ..., 0]
    b[off_br[0]:off_br[0] + h, off_br[1]:off_br[1] + w] = images[j, ..., 0]
    return a, b


def test_composites_exact_construction_and_recovery():
    images, labels = tiny_sources()
    out, y_tl, y_br, meta = make_composites(images, labels, 300, seed=3, max_shift=2)
    canvas = 8 + 2 * 2
    assert out.shape == (300, canvas, canvas, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(y_tl, labels[meta["index_tl"]])
    np.testing.assert_array_equal(y_br, labels[meta["index_br"]])
    assert np.all(y_tl != y_br)
    for k in range(len(out)):
        a, b = naive_composite(images, meta["index_tl"][k], meta["index_br"][k],
                               meta["offset_tl"][k], meta["offset_br"][k], canvas)
        np.testing.assert_array_equal(out[k, ..., 0], np.maximum(a, b))
        # each item is exactly recoverable at its offset wherever the other item is absent
        for (oy, ox), src, other in ((meta["offset_tl"][k], meta["index_tl"][k], b),
                                     (meta["offset_br"][k], meta["index_br"][k], a)):
            crop = out[k, oy:oy + 8, ox:ox + 8, 0]
            free = other[oy:oy + 8, ox:ox + 8] == 0
            np.testing.assert_array_equal(crop[free], images[src, ..., 0][free])


def test_composites_offsets_cover_the_documented_ranges():
    images, labels = tiny_sources()
    _, _, _, meta = make_composites(images, labels, 2000, seed=0, max_shift=2, canvas_size=14)
    # slack = 14 - 8 = 6: top-left in [0, 2], bottom-right in [4, 6], every value used
    assert set(np.unique(meta["offset_tl"])) == {0, 1, 2}
    assert set(np.unique(meta["offset_br"])) == {4, 5, 6}
    # the second item is drawn over all other classes, the first over all items
    assert set(np.unique(meta["index_tl"])) == set(range(len(images)))
    assert set(np.unique(meta["index_br"])) == set(range(len(images)))


def test_composites_deterministic_given_seed():
    images, labels = tiny_sources()
    first = make_composites(images, labels, 50, seed=7, max_shift=2)
    again = make_composites(images, labels, 50, seed=7, max_shift=2)
    other = make_composites(images, labels, 50, seed=8, max_shift=2)
    np.testing.assert_array_equal(first[0], again[0])
    for key in first[3]:
        np.testing.assert_array_equal(first[3][key], again[3][key])
    assert not np.array_equal(first[0], other[0])


def test_composites_reject_bad_arguments():
    images, labels = tiny_sources()
    with pytest.raises(ValueError, match="max_shift"):
        make_composites(images, labels, 5, seed=0, max_shift=5, canvas_size=12)
    with pytest.raises(ValueError, match="two classes"):
        make_composites(images, np.zeros(len(images), int), 5, seed=0, max_shift=1)


@pytest.fixture
def fake_sources(monkeypatch):
    """Replace the MNIST files by small random sources; train and test differ in size and
    content. Records every (source, split) read."""
    calls = []
    arrays = {"train": tiny_sources(n=50, size=28, classes=10, seed=1),
              "test": tiny_sources(n=20, size=28, classes=10, seed=2)}

    def load_source(source, split, data_dir, num_classes):
        calls.append((source, split))
        return arrays[split]

    monkeypatch.setattr(mnist, "load_source", load_source)
    return arrays, calls


@pytest.mark.parametrize("name, source", [("multimnist", "mnist"), ("multifashion", "fashion-mnist")])
def test_load_composites_uses_only_the_same_source_split(tmp_path, tmp_cache, fake_sources, name, source):
    arrays, calls = fake_sources
    spec = get_spec(name)
    for split, n in (("train", 40), ("test", 30)):
        data = load(name, split, tmp_path, num_train=40, num_test=30)
        images, _ = arrays[split]
        assert data.images.shape == (n, *spec.input_shape) and data.spec == spec
        assert calls[-1] == (source, split)
        assert data.extras["index_tl"].max() < len(images) and data.extras["index_br"].max() < len(images)
        for k in range(n):  # rebuilt exactly from this split's sources
            a, b = naive_composite(images, data.extras["index_tl"][k], data.extras["index_br"][k],
                                   data.extras["offset_tl"][k], data.extras["offset_br"][k], 36)
            np.testing.assert_array_equal(data.images[k, ..., 0], np.maximum(a, b))


def test_composite_cache_hit_and_invalidation(tmp_path, tmp_cache, fake_sources):
    _, calls = fake_sources
    first = load("multimnist", "train", tmp_path, num_train=40)
    assert len(calls) == 1 and len(list(tmp_cache.glob("*.npz"))) == 1
    again = load("multimnist", "train", tmp_path, num_train=40)
    assert len(calls) == 1, "a cache hit must not rebuild"
    np.testing.assert_array_equal(first.images, again.images)
    for task in first.labels:
        np.testing.assert_array_equal(first.labels[task], again.labels[task])
    for change in ({"seed": 1}, {"max_shift": 3}, {"num_train": 41}):
        other = load("multimnist", "train", tmp_path, **{"num_train": 40, **change})
        assert not np.array_equal(other.images[:40], first.images), change
    assert len(calls) == 4 and len(list(tmp_cache.glob("*.npz"))) == 4
    load("multimnist", "test", tmp_path, num_test=40)  # same sizes, other split: other entry
    assert len(calls) == 5


def test_corrupt_cache_entry_is_rebuilt(tmp_path, tmp_cache, fake_sources):
    _, calls = fake_sources
    first = load("multimnist", "test", tmp_path, num_test=10)
    (entry,) = tmp_cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="cache"):
        again = load("multimnist", "test", tmp_path, num_test=10)
    assert len(calls) == 2
    np.testing.assert_array_equal(first.images, again.images)


# ---------------------------------------------------------------- Split, options

def tiny_split(n=10):
    spec = get_spec("multimnist")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *spec.input_shape), dtype=np.uint8)
    labels = {t: np.arange(n, dtype=np.int64) % spec.num_classes[t] for t in spec.task_names}
    return Split(images, labels, spec, extras={"id": np.arange(n)})


def test_split_subset_take_len():
    split = tiny_split()
    assert len(split) == 10
    part = split.subset([3, 1])
    np.testing.assert_array_equal(part.images, split.images[[3, 1]])
    np.testing.assert_array_equal(part.extras["id"], [3, 1])
    assert len(split.take(4)) == 4 and split.take(4).labels["top_left"].tolist() == [0, 1, 2, 3]


def test_split_rejects_inconsistent_arrays():
    split = tiny_split()
    with pytest.raises(ValueError):
        Split(split.images, {"top_left": split.labels["top_left"]}, split.spec)
    with pytest.raises(ValueError):
        Split(split.images[:5], split.labels, split.spec)


def test_train_val_split_deterministic_disjoint():
    split = tiny_split(100)
    train, val = train_val_split(split, val_fraction=0.2, seed=1)
    assert (len(train), len(val)) == (80, 20)
    ids = np.concatenate([train.extras["id"], val.extras["id"]])
    assert sorted(ids.tolist()) == list(range(100))
    train2, val2 = train_val_split(split, val_fraction=0.2, seed=1)
    np.testing.assert_array_equal(val.extras["id"], val2.extras["id"])
    _, val3 = train_val_split(split, val_fraction=0.2, seed=2)
    assert not np.array_equal(val.extras["id"], val3.extras["id"])
    with pytest.raises(ValueError):
        train_val_split(split, val_fraction=1.5)


def test_train_val_split_is_stratified():
    labels = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    split = Split(np.zeros((100, 36, 36, 1), np.uint8), {"top_left": labels, "bottom_right": labels[::-1].copy()},
                  get_spec("multimnist"), extras={"id": np.arange(100)})
    for seed in range(5):
        train, val = train_val_split(split, val_fraction=0.1, seed=seed)
        assert np.bincount(val.labels["top_left"]).tolist() == [4, 3, 2, 1]
        assert np.all(np.diff(train.extras["id"]) > 0) and np.all(np.diff(val.extras["id"]) > 0)


# ---------------------------------------------------------------- subsets (Split.sample)

def shares(column, k):
    return 100 * np.bincount(column, minlength=k) / len(column)


def test_stratified_allocation_is_proportional_with_largest_remainders():
    column = np.repeat([0, 1, 2], [50, 33, 17])  # quotas 10, 6.6, 3.4 of 20 -> 10, 7, 3
    for seed in range(5):
        idx = stratified_indices([column], 20, seed)
        assert np.bincount(column[idx]).tolist() == [10, 7, 3]
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats: the split's order


def test_stratified_subset_deterministic_seeded_and_not_the_first_rows():
    column = np.arange(1000) % 7
    a, b, c = (stratified_indices([column], 100, seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.arange(100))
    assert a.max() > 500  # drawn from the whole split


def test_rare_joint_cells_are_pooled_on_the_leading_keys():
    # 2 groups (60 / 40 items) x 40 fine labels: every joint cell expects 0.1 of an item
    group = np.repeat([0, 1], [600, 400])
    fine = np.arange(1000) % 40
    common = np.arange(1000) % 2  # a label whose joint cells with the group are large
    for seed in range(5):
        idx = stratified_indices([group, fine], 50, seed)
        assert np.bincount(group[idx]).tolist() == [30, 20]  # the leading key survives the pooling
        idx = stratified_indices([group, common], 50, seed)
        assert np.bincount(group[idx] * 2 + common[idx]).tolist() == [15, 15, 10, 10]  # joint cells kept


def test_stratified_indices_rejects_bad_sizes():
    for n in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="cannot draw"):
            stratified_indices([np.arange(10)], n)
    with pytest.raises(ValueError, match="differ in length"):
        stratified_indices([np.arange(10), np.arange(9)], 5)
    np.testing.assert_array_equal(stratified_indices([np.arange(10)], 10), np.arange(10))


def test_split_sample_whole_split_and_stratify_choices():
    split = tiny_split(40)
    assert split.sample(None) is split and split.sample(40) is split
    assert len(split.sample(8, stratify=None)) == 8
    assert np.bincount(split.sample(20, stratify=["top_left"]).labels["top_left"]).tolist() == [2] * 10
    with pytest.raises(ValueError, match="cannot stratify on 'nope'"):
        split.sample(8, stratify=["nope"])
    with pytest.raises(ValueError, match="stratify must be"):
        split.sample(8, stratify="labels")


def test_real_composite_and_mnist_subsets_keep_class_shares(data_dir):
    spec = get_spec("multimnist")
    whole = load("multimnist", "test", data_dir, num_test=5_000)
    sub = whole.sample(500, seed=0)
    joint = whole.labels["top_left"] * 10 + whole.labels["bottom_right"]
    sub_joint = sub.labels["top_left"] * 10 + sub.labels["bottom_right"]
    for task in spec.task_names:  # each class within half a point; each joint cell within 1 item
        assert np.abs(shares(sub.labels[task], 10) - shares(whole.labels[task], 10)).max() < 0.5
    assert np.abs(np.bincount(sub_joint, minlength=100) - np.bincount(joint, minlength=100) / 10).max() < 1
    assert not np.array_equal(sub.extras["index_tl"], whole.extras["index_tl"][:500])
    digits = load("mnist", "test", data_dir)
    part = digits.sample(300, seed=1)
    assert np.abs(np.bincount(part.labels["digit"]) - np.bincount(digits.labels["digit"]) * 0.03).max() < 1


def test_run_split_draws_its_cap_with_the_run_seed(data_dir):
    config = {"dataset": "multimnist", "model": "gs", "data": {"num_train": 300, "num_test": 200},
              "limits": {"max_train": 100, "max_test": 50}, "subsets": runs.subsets_record(7)}
    whole = load("multimnist", "train", data_dir, num_train=300, num_test=200)
    capped = runs.load_split(config, "train", data_dir)
    np.testing.assert_array_equal(capped.images, whole.sample(100, seed=7).images)
    assert not np.array_equal(capped.images, whole.images[:100])
    assert len(runs.load_split(config, "test", data_dir)) == 50
    assert runs.subsets_of(config) == {"rule": SUBSET_RULE, "seed": 7}
    legacy = {k: v for k, v in config.items() if k != "subsets"}  # a run made before the rule: first N
    np.testing.assert_array_equal(runs.load_split(legacy, "train", data_dir).images, whole.images[:100])
    with pytest.raises(runs.RunError, match="predates"):  # its MTFL paper split cannot be rebuilt
        runs.load_split({"dataset": "mtfl", "model": "gs", "data": {}}, "test", data_dir)


@pytest.mark.parametrize("call, error", [
    (lambda: load("multimnist", "train", num_trian=5), TypeError),
    (lambda: load("mnist", "train", seed=1), TypeError),
    (lambda: load("mtfl", "train", protocol="nope"), ValueError),
    (lambda: load("mtfl", "train", image_size=0), ValueError),
    (lambda: load("multimnist", "train", num_train=-1), ValueError),
    (lambda: load("multimnist", "valid"), ValueError),
    (lambda: load("cifar", "train"), ValueError),
])
def test_load_rejects_bad_arguments(call, error):
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------- tf.data

def test_to_dataset_scales_and_batches():
    split = tiny_split(10)
    batches = list(to_dataset(split, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype.name == "float32" and tuple(images.shape[1:]) == split.spec.input_shape
    np.testing.assert_allclose(images.numpy(), split.images[:4] / 255.0, rtol=1e-6)
    assert set(labels) == set(split.spec.task_names)
    assert all(v.dtype.name == "int64" and v.shape == (4,) for v in labels.values())
    assert len(list(to_dataset(split, 4, drop_remainder=True))) == 2


def test_to_dataset_shuffle_seeded_and_repeat():
    split = tiny_split(10)
    def order(ds):
        return np.concatenate([lab["top_left"].numpy() for _, lab in ds])
    a = order(to_dataset(split, 3, shuffle=True, seed=5))
    b = order(to_dataset(split, 3, shuffle=True, seed=5))
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == sorted(split.labels["top_left"].tolist())
    assert len(list(to_dataset(split, 5, repeat=True).take(7))) == 7
    # repeated (labels 0-9 name the images): epoch after epoch the batches a fresh iterator per epoch gives
    # (the last one partial),
    # reshuffled each epoch; train.py's fit reads it with steps_per_epoch = ceil(10 / 3) = 4
    fresh = to_dataset(split, 3, shuffle=True, seed=5)
    epochs = [[lab["top_left"].numpy().tolist() for _, lab in fresh] for _ in range(3)]
    endless = iter(to_dataset(split, 3, shuffle=True, seed=5, repeat=True))
    assert [[next(endless)[1]["top_left"].numpy().tolist() for _ in range(4)] for _ in range(3)] == epochs
    assert [len(b) for b in epochs[0]] == [3, 3, 3, 1] and epochs[0] != epochs[1]


# ---------------------------------------------------------------- missing files

@pytest.fixture
def offline(monkeypatch):
    """Downloads fail like keras.utils.get_file fails without a network; records attempts."""
    attempts = []

    def get_file(name, origin, target):
        attempts.append((name, origin, pathlib.Path(target)))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(fetch, "_get_file", get_file)
    return attempts


@pytest.mark.parametrize("name, folder, files", [
    ("mnist", "mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]),
    ("multifashion", "fashion-mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]),
    ("mtfl", "mtfl", ["MTFL.zip"]),
])
def test_missing_files_error_says_what_where_and_whence(tmp_path, tmp_cache, offline, name, folder, files):
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load(name, "train", data_dir)
    message = str(info.value)
    for f in files:
        assert f in message
    assert f"<data_dir>/{folder}/" in message and str(data_dir / folder) in message
    assert "TF_MTVIB_DATA_DIR" in message and "--data-dir" in message
    remote = fetch_remote(folder)
    assert remote.base_urls[0] in message
    # every missing file was tried from the public URL(s), into the data directory
    assert {a[0] for a in offline} == set(files)
    assert {a[1] for a in offline} == {base + f for base in remote.base_urls for f in files}
    assert {a[2] for a in offline} == {data_dir / folder}


def fetch_remote(folder):
    return mtfl.REMOTE if folder == "mtfl" else mnist.SOURCES[folder]


def test_download_goes_to_cache_when_data_dir_read_only(tmp_path, tmp_cache, offline, monkeypatch):
    data_dir = tmp_path / "data"
    real = fetch.is_writable_dir
    monkeypatch.setattr(fetch, "is_writable_dir", lambda p: not str(p).startswith(str(data_dir)) and real(p))
    with pytest.raises(DataError):
        load("mnist", "test", data_dir)
    assert {a[2] for a in offline} == {tmp_cache / "downloads" / "mnist"}


def test_downloaded_file_is_checked_like_a_local_one(tmp_path, tmp_cache, monkeypatch):
    def get_file(name, origin, target):  # a "download" that brings the wrong content
        return write_idx(target / name, idx_bytes(ARRAY), compress=True)

    monkeypatch.setattr(fetch, "_get_file", get_file)
    with pytest.raises(DataError, match="shape|checksum") as info:
        load("mnist", "test", tmp_path)
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in str(info.value)


def test_download_attempt_fails_fast_without_network(tmp_path, tmp_cache, monkeypatch):
    """The real keras.utils.get_file path, against a closed local port."""
    remote = mnist.SOURCES["mnist"]
    monkeypatch.setitem(mnist.SOURCES, "mnist", type(remote)(remote.title, remote.folder,
                                                              ("http://127.0.0.1:9/",), remote.files))
    start = time.perf_counter()
    with pytest.raises(DataError, match="127.0.0.1:9"):
        load("mnist", "test", tmp_path)
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "mnist").exists(), "no empty folder or partial file left behind"


def test_uncompressed_idx_files_are_accepted(tmp_path, tmp_cache, offline, data_dir):
    """The real test files, stored uncompressed under their IDX names."""
    target = tmp_path / "mnist"
    target.mkdir()
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (target / f).write_bytes(gzip.decompress((data_dir / "mnist" / f"{f}.gz").read_bytes()))
    assert load("mnist", "test", tmp_path).images.shape == (10_000, 28, 28, 1)
    assert offline == []


# ---------------------------------------------------------------- real data

@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_real_sources_verified(data_dir, source):
    for split, n in mnist.SOURCE_SIZES.items():
        images, labels = mnist.load_source(source, split, data_dir, 10)  # digests checked inside
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))


def test_real_mnist(data_dir):
    train = load("mnist", "train", data_dir)
    assert train.images.shape == (60_000, 28, 28, 1) and len(load("mnist", "test", data_dir)) == 10_000
    assert set(train.labels) == {"digit"}


@pytest.mark.parametrize("name, source", [("multimnist", "mnist"), ("multifashion", "fashion-mnist")])
def test_real_composites(data_dir, name, source):
    spec = get_spec(name)
    for split, n in (("train", 2000), ("test", 500)):
        data = load(name, split, data_dir, num_train=2000, num_test=500)
        assert data.images.shape == (n, *spec.input_shape)
        for task in spec.tasks:
            assert data.labels[task.name].min() >= 0 and data.labels[task.name].max() < task.num_classes
        assert np.all(data.labels["top_left"] != data.labels["bottom_right"])
        images, labels = mnist.load_source(source, split, data_dir, 10)
        np.testing.assert_array_equal(data.labels["top_left"], labels[data.extras["index_tl"]])
        for k in range(0, n, 97):  # rebuilt exactly from this split's own source images
            a, b = naive_composite(images, data.extras["index_tl"][k], data.extras["index_br"][k],
                                   data.extras["offset_tl"][k], data.extras["offset_br"][k], 36)
            np.testing.assert_array_equal(data.images[k, ..., 0], np.maximum(a, b))


def test_real_to_dataset(data_dir):
    data = load("multimnist", "test", data_dir, num_test=500)
    images, labels = next(iter(to_dataset(data, 64, shuffle=True, seed=0)))
    assert images.shape == (64, 36, 36, 1) and 0.0 <= float(images.numpy().min()) <= float(images.numpy().max()) <= 1.0
    assert set(labels) == {"top_left", "bottom_right"}


def test_cli_prints_counts_histograms_and_times(data_dir, capsys):
    cli_main(["--dataset", "mnist", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert "train: 60000 items" in out and "test: 10000 items" in out
    assert "digit: 0=980" in out and "cached" in out
