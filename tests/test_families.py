"""Model families as plugins: the registry, importing without TensorFlow, and a user's family
registered through the entry point, trained, evaluated and exported with the commands."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "families.md"


def test_family_files_and_the_registry_import_no_tensorflow():
    code = ("import sys; import tf_mtvib.families as F; names = F.family_names(); "
            "import tf_mtvib.catalogue; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]; "
            "print(names, bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "('stl', 'gs', 'uwl', 'stvib', 'mtvib', 'vib_mlp', 'mlp', 'lenet_stl', 'lenet_mtl', 'mmoe', 'mtcrl', 'lenet_mtvib', 'bmtl', 'vbmtl', 'vmtl', 'domain_mtvib') []"


def test_every_package_family_is_one_file_with_a_spec_and_a_builder():
    from tf_mtvib import families as F

    for name in F.PACKAGE_FAMILIES:
        assert (REPO / "tf_mtvib" / "families" / f"{name}.py").exists(), name
        spec = F.get_family(name)
        assert spec.name == name and spec.description and callable(F.builder_of(spec))
    assert F.get_family("mtvib").stochastic and not F.get_family("gs").stochastic
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        F.get_family("nope")


def test_register_family_refuses_clashes():
    from tf_mtvib import families as F

    with pytest.raises(ValueError, match="registered already"):
        F.register_family(F.FamilySpec("gs", "another gs", builder="x:y"))
    with pytest.raises(ValueError, match="are taken"):
        F.register_family(F.FamilySpec("clash", "x", builder="x:y", hparams={"beta": F.HParam(1.0, "h")}))
    with pytest.raises(ValueError, match="unknown default weighting"):
        F.register_family(F.FamilySpec("noweight", "x", builder="x:y", default_weighting="nope"))


def _example() -> str:
    text = PAGE.read_text()
    return re.search(r"<!-- family-example -->\n```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """docs/families.md's example as a file of a temporary distribution with an entry point."""
    from tf_mtvib import families as F

    site = tmp_path / "site"
    site.mkdir()
    (site / "my_toy_family.py").write_text(_example())
    info = site / "my_toy_family-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-toy-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tf_mtvib.families]\ntoy = my_toy_family\n")
    monkeypatch.syspath_prepend(str(site))
    F.refresh_entry_points()
    yield site
    F._FAMILIES.pop("toy", None)
    sys.modules.pop("my_toy_family", None)


@pytest.mark.slow
def test_a_users_family_trains_evaluates_and_exports_through_the_commands(toy_family, tmp_path, data_dir, capsys):
    from tf_mtvib import evaluate, export, train, tune
    from tf_mtvib.families import family_names

    assert "toy" in family_names()
    assert "toy" in tune.search_spaces()
    parser_help = " ".join(train.make_parser().format_help().split())     # argparse wraps lines where it likes
    assert "--toy-width" in parser_help and "toy = one shared Dense layer" in parser_help

    run = tmp_path / "run"
    assert train.main(["--dataset", "multimnist", "--model", "toy", "--toy-width", "16", "--preset", "smoke",
                       "--epochs", "1", "--num-train", "64", "--num-test", "40", "--output-dir", str(run),
                       "--verbose", "0", "--data-dir", str(data_dir)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "toy" and config["hparams"]["toy_width"] == 16
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]["mean"]) == {"top_left", "bottom_right", "joint"}

    assert evaluate.main(["--run", str(run), "--attack", "fgsm", "--eps", "0,0.1", "--quiet",
                          "--data-dir", str(data_dir)]) == 0
    doc = json.loads((run / "robustness.json").read_text())
    assert doc["results"][0]["model"] == "toy" and doc["results"][0]["num_examples"] == 40

    out = tmp_path / "export"
    assert export.main(["--run", str(run), "--output", str(out), "--tflite", "--data-dir", str(data_dir),
                        "--check-limit", "40", "--quiet"]) == 0
    assert list(out.rglob("saved_model.pb")) and list(out.glob("*.tflite"))
    from tf_mtvib.runs import load_run

    model = load_run(run).model
    assert model.network.get_layer("toy_hidden").units == 16
