"""The documentation states no figure that is not generated from committed JSON or checked here."""
import pathlib
import re

from tf_mtvib.reproduce import vib

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def prose(text: str) -> str:
    """``text`` without its generated parts, code blocks, code spans and link targets."""
    text = re.sub(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED[^>]*-->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_results_prose_states_no_measured_figure():
    """Every number in RESULTS.md's own prose is a name (a figure, table or year), never a result."""
    allowed = re.compile(r"(Fig\. \d[a-d]?|Table \d|Tables [IVX]+-[IVX]+|\b(19|20)\d\d\b|L2)")
    text = allowed.sub("", prose((DOCS / "RESULTS.md").read_text()))
    assert re.findall(r"\d", text) == [], re.findall(r".{30}\d.{30}", text)


def test_readme_and_results_state_no_time_in_words():
    """A duration in words ("about two hours") is a measured figure too: it comes from JSON or not at all."""
    words = r"(one|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|forty|sixty|a few|several|half an?)"
    for page in (DOCS.parent / "README.md", DOCS / "RESULTS.md"):
        text = re.sub(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED[^>]*-->", "", page.read_text(), flags=re.S)
        found = re.findall(rf"\b{words}\s+(?:hours?|minutes?)\b", text, flags=re.I)
        assert not found, (page.name, found)


def test_vib_page_states_no_measured_figure_and_its_schedules_match_the_code():
    """vib.md's prose has no result (no percentage, bits or seconds); its schedule table is SCHEDULES."""
    text = prose((DOCS / "vib.md").read_text())
    assert not re.search(r"\d\s*%|\d\s*bits|\d\s*(s|min|h)\b", text), re.findall(r".{30}\d\s*(?:%|bits).{10}", text)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)`[^|]*\|.*$", (DOCS / "vib.md").read_text(), re.M)}
    for name, s in vib.SCHEDULES.items():
        row = rows[name]
        lr = f"{s['learning_rate']:.0e}".replace("e-0", "e-")  # 1e-3
        assert f"beta_1 {s['adam_beta1']:g}" in row and f"| {lr}," in row and f"| {s['batch_size']} |" in row
        if s["lr_decay"] != 1.0:
            assert f"x{s['lr_decay']:g} every {s['lr_decay_epochs']} epochs" in row
        if s["ema_momentum"]:
            assert f"momentum {s['ema_momentum']:g}" in row


def test_serving_page_export_table_is_the_committed_check():
    """serving.md's export-check table is ``check_markdown`` of the committed ``--json`` output,
    and the JSON names no machine path."""
    import json

    from tf_mtvib.export import check_markdown

    page = (DOCS / "serving.md").read_text()
    m = re.search(r"<!-- BEGIN GENERATED: tf_mtvib\.export\.check_markdown\((.+?)\) -->\n(.*?)<!-- END GENERATED", page, re.S)
    assert m, "serving.md has no generated export-check block"
    path = DOCS.parent / m.group(1)
    doc = json.loads(path.read_text())
    assert m.group(2) == check_markdown(doc)
    assert doc["check"]["images"] == 10_000 and set(doc["check"]["rows"]) >= {"keras", "savedmodel", "tflite_int8"}
    assert not re.search(r"/(root|home|tmp|work)/", path.read_text())


def test_robustness_page_protocol_block_is_the_committed_study():
    """docs/robustness.md's generated block is ``render_markdown`` of the committed study JSON."""
    import json

    from tf_mtvib.reproduce import protocols as P

    page = (DOCS / "robustness.md").read_text()
    studies = {path.parent.parent.name: path for path in DOCS.glob("results/*/protocols/protocols.json")}
    assert "cpu" in studies, "no committed protocol study"
    for preset in ("cpu", "full"):    # each preset's study in its own block
        begin, end = P.markers(preset)
        block = page[page.index(begin) + len(begin):page.index(end)].strip("\n")
        if preset not in studies:
            assert block.startswith("Not run yet"), preset
            continue
        doc = json.loads(studies[preset].read_text())
        assert doc["preset"] == preset and block == P.render_markdown(doc).strip("\n")
        for d in doc["datasets"].values():
            assert (DOCS / d["plot"]).exists()


def test_results_verdicts_and_goals_are_the_committed_json():
    """Each preset's verdict block in RESULTS.md is ``verdict`` of the JSON committed under
    docs/results/<preset>/, and the preset's goals table (if it sets goals) is in its block verbatim."""
    from tf_mtvib.reproduce import mtl

    text = (DOCS / "RESULTS.md").read_text()
    presets = re.findall(r"<!-- BEGIN GENERATED VERDICT: python -m tf_mtvib\.reproduce mtl --preset (\S+) -->", text)
    assert "cpu" in presets
    for preset in presets:
        begin, end = mtl.markers(preset, "VERDICT")
        block = text[text.index(begin) + len(begin):text.index(end)].strip()
        assert block == mtl.verdict(DOCS / "results", preset).strip(), preset
        goals = mtl.goals_section(DOCS / "results", preset)
        if goals is not None:
            begin, end = mtl.markers(preset)
            assert goals in text[text.index(begin):text.index(end)], preset


def test_saturation_blocks_are_the_committed_json():
    """docs/robustness.md's saturation block and RESULTS.md's "Why the curves differ" are
    generated from the committed saturation.json / along.json files."""
    from tf_mtvib.reproduce import saturation as S

    page = (DOCS / "robustness.md").read_text()
    block = page[page.index(S.BEGIN) + len(S.BEGIN):page.index(S.END)].strip("\n")
    assert block == S.render(DOCS / "results", "full").split("\n", 2)[2].strip("\n")
    text = (DOCS / "RESULTS.md").read_text()
    why = text[text.index(S.WHY_BEGIN) + len(S.WHY_BEGIN):text.index(S.WHY_END)].strip("\n")
    assert why == S.why_section(DOCS / "results", "full").strip("\n")
    assert (DOCS / "results" / "full" / S.REPORT).read_text().strip("\n") == S.render(DOCS / "results", "full").strip("\n")


def test_every_planned_saturation_model_is_measured_or_named_with_its_reason():
    """The study's left-out models are a committed record, not "not measured yet": each planned seed-0
    model has a saturation.json or a LEFT_OUT entry, the report names each left-out one with its reason,
    and no entry outlives its model's measurement."""
    from tf_mtvib.reproduce import saturation as S

    results = DOCS / "results"
    planned = S.default_cells(results, "full")
    measured = {c for c in planned if (results / "full" / c / S.SATURATION_JSON).exists()}
    assert set(planned) == measured | set(S.LEFT_OUT)
    assert not measured & set(S.LEFT_OUT)
    why = S.why_section(results, "full")
    assert "not measured yet" not in why
    for cell, reason in S.LEFT_OUT.items():
        assert f"{cell} ({reason})" in why


def test_vib_page_is_the_committed_json():
    """docs/vib.md's generated part (Table 1's verdicts, the progress of unfinished runs, Fig. 1, Fig. 4(b),
    the times) is what the generator gives from the committed docs/results/vib files."""
    from tf_mtvib.reproduce import vib

    page = (DOCS / "vib.md").read_text()
    block = page[page.index(vib.DOC_BEGIN) + len(vib.DOC_BEGIN):page.index(vib.DOC_END)].strip("\n")
    assert block == vib.doc_section(DOCS / "results" / "vib", DOCS).strip("\n")


def test_committed_results_and_pages_name_no_machine_path():
    """Results files and pages record paths in the checkout relative to it (and the home directory as ``~``),
    never one machine's absolute path."""
    root = DOCS.parent
    absolute = re.compile(r"(?<![\w.~-])/(?:root|home|Users|work|tmp|mnt|var)/[\w.-]+")
    pages = [root / "README.md", root / "benchmarks" / "README.md", *DOCS.glob("*.md")]
    files = pages + sorted((root / "benchmarks" / "results").glob("*.json")) + sorted(DOCS.glob("results/**/*.json"))
    files += sorted(DOCS.glob("results/**/*.md"))
    found = {str(f.relative_to(root)): m for f in files for m in absolute.findall(f.read_text())}
    assert not found, found
