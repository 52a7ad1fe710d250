"""VMTL's digit domains (tf_mtvib/datasets/domains.py) and the Office-Home feature reader."""
import numpy as np
import pytest

from tf_mtvib.datasets import DataError, get_spec, load, per_task_splits, read_office_home
from tf_mtvib.datasets.domains import DOMAINS, fraction_split, render


def test_render_each_domain():
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    textures = rng.integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(render("original", digits), digits)
    np.testing.assert_array_equal(render("negative", digits), 255 - digits)
    np.testing.assert_array_equal(render("rotated", digits)[0, :, :, 0], np.rot90(digits[0, :, :, 0]))
    tex = render("textured", digits, textures)
    np.testing.assert_array_equal(tex, np.maximum(digits, textures // 2))
    with pytest.raises(ValueError, match="one texture per digit"):
        render("textured", digits)
    with pytest.raises(ValueError, match="unknown domain"):
        render("sketch", digits)


def test_fraction_split_is_per_class_and_refuses_an_empty_class():
    labels = np.repeat(np.arange(10), 100)
    mask = fraction_split(labels, 0.05, seed=1)
    np.testing.assert_array_equal(np.bincount(labels[mask]), [5] * 10)
    assert not np.array_equal(mask, fraction_split(labels, 0.05, seed=2))
    np.testing.assert_array_equal(mask, fraction_split(labels, 0.05, seed=1))
    with pytest.raises(DataError, match="no training images of class"):
        fraction_split(np.repeat(np.arange(10), 5), 0.05, seed=0, task="rotated")


def test_digitdomains_tasks_have_their_own_disjoint_images(data_dir, tmp_cache):
    spec = get_spec("digitdomains")
    assert spec.task_names == DOMAINS
    train = load("digitdomains", "train", data_dir, per_domain=400, fraction=0.1, seed=3)
    test = load("digitdomains", "test", data_dir, per_domain=400, fraction=0.1, seed=3)
    assert len(train) + len(test) == 1600 and 150 <= len(train) <= 170
    sources = np.concatenate([train.extras["source_index"], test.extras["source_index"]])
    assert len(np.unique(sources)) == len(sources) == 1600          # no digit in two domains or in both splits
    for split in (train, test):
        tasks = split.extras["task"]
        for k, name in enumerate(DOMAINS):
            own = tasks == k
            assert (split.labels[name][own] >= 0).all() and (split.labels[name][~own] == -1).all()
        textured = tasks == DOMAINS.index("textured")
        assert (split.extras["texture_index"][textured] >= 0).all() and (split.extras["texture_index"][~textured] == -1).all()
    per_task, held_out = per_task_splits(train), per_task_splits(test)
    assert list(per_task) == list(DOMAINS)
    for name, part in per_task.items():       # per class, round(10 % of the domain's images of the class)
        n_c = np.bincount(part.labels[name], minlength=10) + np.bincount(held_out[name].labels[name], minlength=10)
        assert len(part) + len(held_out[name]) == 400
        np.testing.assert_array_equal(np.bincount(part.labels[name], minlength=10), np.round(0.1 * n_c).astype(int))
    # the renderings: a negative digit is mostly bright, a rotated one is an MNIST digit turned
    from tf_mtvib.datasets.mnist import load_source
    digits, labels = load_source("mnist", "train", data_dir, 10)
    neg = per_task["negative"]
    np.testing.assert_array_equal(neg.images, 255 - digits[neg.extras["source_index"]])
    rot = per_task["rotated"]
    np.testing.assert_array_equal(rot.images[:, :, :, 0], np.rot90(digits[rot.extras["source_index"], :, :, 0], axes=(1, 2)))
    np.testing.assert_array_equal(rot.labels["rotated"], labels[rot.extras["source_index"]])
    # the same options give the same data; another seed other digits
    again = load("digitdomains", "train", data_dir, per_domain=400, fraction=0.1, seed=3)
    np.testing.assert_array_equal(again.images, train.images)
    other = load("digitdomains", "train", data_dir, per_domain=400, fraction=0.1, seed=4)
    assert not np.array_equal(other.extras["source_index"], train.extras["source_index"])


def test_digitdomains_bad_options(data_dir, tmp_cache):
    with pytest.raises(DataError, match="no training images of class"):
        load("digitdomains", "train", data_dir, per_domain=50, fraction=0.05)
    with pytest.raises(ValueError, match="fraction must be a number in"):
        load("digitdomains", "train", data_dir, fraction=1.5)
    with pytest.raises(DataError, match="needs 280,000 digits"):
        load("digitdomains", "train", data_dir, per_domain=70_000)


def _write_office_home(root, labels_of_domain, dim=6):
    """Feature files and MRN-style split lists whose paths are absolute on another machine."""
    feats, lists = root / "office-home_feature", root / "split"
    expected = {}
    for domain, labels in labels_of_domain.items():
        (lists / domain).mkdir(parents=True)
        expected[domain] = {}
        for part, offset in (("train", 0), ("test", 100)):
            lines, rows = [], []
            for i, y in enumerate(labels):
                cls = f"Class{y}"
                (feats / domain / cls).mkdir(parents=True, exist_ok=True)
                vec = np.arange(dim, dtype=np.float32) + 1000 * y + i + offset
                np.save(feats / domain / cls / f"{part}{i:05d}.npy", vec)
                lines.append(f"/home/someone/data/office-home/{domain}/{cls}/{part}{i:05d}.jpg {y}")
                rows.append(vec)
            (lists / domain / f"{part}_5.txt").write_text("\n".join(lines) + "\n")
            expected[domain][part] = (np.stack(rows), np.asarray(labels))
    return feats, lists, expected


def test_read_office_home_maps_foreign_paths_by_domain_class_file(tmp_path):
    domains = ("Art", "Clipart", "Product", "Real_World")
    feats, lists, expected = _write_office_home(tmp_path, {d: [0, 1, 2, 1] for d in domains})
    out = read_office_home(feats, lists, percent=5)
    assert list(out) == list(domains)
    for d in domains:
        for part in ("train", "test"):
            np.testing.assert_array_equal(out[d][part]["features"], expected[d][part][0])
            np.testing.assert_array_equal(out[d][part]["labels"], expected[d][part][1])
    with pytest.raises(DataError, match="no split list"):
        read_office_home(feats, lists, percent=10)


def test_read_office_home_refuses_missing_files_and_differing_label_sets(tmp_path):
    domains = ("Art", "Clipart", "Product", "Real_World")
    labels = {d: [0, 1, 2] for d in domains}
    labels["Product"] = [0, 1, 3]
    feats, lists, _ = _write_office_home(tmp_path / "a", labels)
    with pytest.raises(DataError, match="label sets differ"):
        read_office_home(feats, lists)
    feats, lists, _ = _write_office_home(tmp_path / "b", {d: [0, 1] for d in domains})
    (feats / "Art" / "Class1" / "train00001.npy").unlink()
    with pytest.raises(DataError, match="no feature file"):
        read_office_home(feats, lists)


def test_dataset_summary_counts_each_task_on_its_own_images(data_dir, tmp_cache):
    from tf_mtvib.datasets.__main__ import describe

    train = load("digitdomains", "train", data_dir, per_domain=200, fraction=0.2)
    text = describe(train)
    for name, part in per_task_splits(train).items():
        assert f"{name} ({len(part)} of its own): " in text


def test_train_py_refuses_bad_digitdomains_input_with_exit_2(data_dir, tmp_path, capsys):
    """Bad input to a VMTL training is a clear error and exit 2: a task with no training image of a class
    at the chosen fraction, and a data set whose tasks do not have their own images."""
    from tf_mtvib import train

    argv = ["--model", "vmtl", "--preset", "smoke", "--data-dir", str(data_dir)]
    assert train.main(["--dataset", "digitdomains", "--per-domain", "50", "--fraction", "0.05",
                       "--output-dir", str(tmp_path / "a"), *argv]) == 2
    assert "has no training images of class" in capsys.readouterr().err
    assert train.main(["--dataset", "mnist", "--output-dir", str(tmp_path / "b"), *argv]) == 2
    assert "does not take data set 'mnist'" in capsys.readouterr().err
