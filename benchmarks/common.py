"""Shared helpers of the benchmark scripts: machine description, interleaved
timing, tables and the JSON results file.

Every figure the scripts report is either a ratio of two things timed in the
same process, in alternation (A, B, A, B, ...), or a median over such
rounds: on a machine shared with other jobs the absolute speed drifts from
minute to minute, while the ratio of two measurements taken seconds apart
stays put.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a fast smoke version (few steps, small sizes)")
    p.add_argument("--output", type=pathlib.Path, default=RESULTS / f"{name.replace('bench_', '')}.json",
                   help="JSON results file")
    p.add_argument("--rounds", default=None, help="interleaved rounds per measurement (default: per script)")
    return p


_STARTED: Optional[float] = None


def parse_args(p: argparse.ArgumentParser, argv=None, rounds: Optional[Tuple[int, int]] = None) -> argparse.Namespace:
    """Parse the command line and start the clock :func:`write_results` reports as ``seconds``. With
    ``rounds=(quick, full)``, an unset ``--rounds`` becomes the script's default for its mode (an int)."""
    global _STARTED
    args = p.parse_args(argv)
    _STARTED = time.perf_counter()
    if rounds is not None:
        args.rounds = int(args.rounds or rounds[0 if args.quick else 1])
    return args


def data_dir(arg: Optional[pathlib.Path]) -> Optional[pathlib.Path]:
    """--data-dir, else $TF_MTVIB_DATA_DIR (resolved relative to the current directory)."""
    if arg is not None:
        return arg
    env = os.environ.get("TF_MTVIB_DATA_DIR")
    return pathlib.Path(env) if env else None


def per_dataset(text: str, datasets: Sequence[str], flag: str, parser: argparse.ArgumentParser) -> Dict[str, int]:
    """``"multimnist=100,mtfl=32"`` (or one number for every data set) -> {data set: int};
    multifashion takes multimnist's value unless given."""
    text = str(text).strip()
    if "=" not in text:
        try:
            return {d: int(text) for d in datasets}
        except ValueError:
            parser.error(f"{flag}: expected a number or name=number,...; got {text!r}")
    out: Dict[str, int] = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            parser.error(f"{flag}: expected name=number,...; got {text!r}")
    if "multimnist" in out:
        out.setdefault("multifashion", out["multimnist"])
    missing = [d for d in datasets if d not in out]
    if missing:
        parser.error(f"{flag}: no value for {', '.join(missing)}")
    return out


def smoke_run(dataset: str, model: str, data_dir, workdir) -> pathlib.Path:
    """A run trained by ``train.py --preset smoke`` (seconds) in ``workdir``: a real
    trained model for the inference and robustness timings, whose speed does
    not depend on how well the weights are trained (:func:`tf_mtvib.train.ensure_run`)."""
    from tf_mtvib import train

    path = pathlib.Path(workdir) / f"{dataset}-{model}-smoke"
    config = train.build_config(train.parse_args(["--dataset", dataset, "--model", model, "--preset", "smoke",
                                                  "--eval-samples", "0"]))
    try:
        train.ensure_run(config, path, data_dir=data_dir, verbose=0, log=log)
    except (train.RunConflict, train.RunFailed) as e:
        raise SystemExit(f"the smoke run {path}: {e}")
    return path


# --------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> Dict[str, Any]:
    """CPU model, core counts, memory, library versions, load average."""
    import numpy as np
    import tensorflow as tf
    import keras

    info: Dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "load_average_at_start": _load_average(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),   # tf_mtvib.runtime: allocator thresholds
    }
    from tf_mtvib.runtime import machine as cpu

    described = cpu()       # the ISA flags (AMX, AVX512_BF16, AVX512_FP16, AVX2, ...) and SMT, as runs record them
    info.update(isa=described["isa"], smt_siblings=described["smt_siblings"])
    try:
        import tensorflow_probability as tfp

        info["tensorflow_probability"] = tfp.__version__
    except Exception:  # pragma: no cover - not needed by every script
        pass
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:
        pass
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    load = info.get("load_average_at_start")
    isa = info.get("isa") or (info.get("cpu_isa") or {}).get("isa")
    flags = f" ({', '.join(isa)})" if isa else ""
    return (f"{info['cpu_model']}{flags}, {info['cpus_usable']} usable core(s), TF {info['tensorflow']}, "
            f"Keras {info['keras']}" + (f", load average {load[0]:.1f} at start" if load else ""))


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
def interleave(fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1,
               log: Optional[Callable[[str], None]] = None, log_every: int = 1) -> Dict[str, List[float]]:
    """Run every function in ``fns`` once per round, in turn, ``rounds`` times
    (after ``warmup`` untimed rounds); the order alternates between rounds
    (A B C, C B A, A B C, ...) so that neither side always follows the other.
    A function may return the seconds it measured itself (e.g. without its
    set-up); otherwise its wall-clock time is used. Returns the seconds of
    every timed call, per name."""
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            measured = fns[n]()
            dt = time.perf_counter() - t0 if measured is None else float(measured)
            if r >= warmup:
                times[n].append(dt)
        if log and r >= warmup and ((r - warmup + 1) % log_every == 0 or r == warmup + rounds - 1):
            log(f"round {r - warmup + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> Dict[str, float]:
    """Per-round ratios ``num[i] / den[i]`` of two interleaved series: median,
    quartiles, min, max, and the ratio of the medians."""
    per_round = [a / b for a, b in zip(num, den)]
    q1, _, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else (per_round[0],) * 3
    return {"median_of_round_ratios": median(per_round), "q1": q1, "q3": q3,
            "ratio_of_medians": median(num) / median(den),
            "min": min(per_round), "max": max(per_round), "rounds": len(per_round)}


def ratio_cell(st: Optional[Mapping[str, float]]) -> Optional[str]:
    """``0.987 [0.95, 1.02]``: the median per-round ratio and its quartiles, for a table."""
    if not st:
        return None
    return f"{fmt(st['median_of_round_ratios'])} [{fmt(st['q1'])}, {fmt(st['q3'])}]"


def per_call(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    """A function that calls ``fn`` ``calls`` times (one timed unit of
    :func:`interleave`) and returns the median call time times ``calls``: the
    burst's duration, robust to a short burst of load from other jobs."""
    def run():
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return median(ts) * calls
    return run


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def fmt(x: Any) -> str:
    """Numbers with as many digits as a noisy measurement deserves."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    if math.isnan(x):
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda cs: "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def write_results(path: pathlib.Path, name: str, args: argparse.Namespace, machine_info: Mapping[str, Any],
                  results: Any, tables: Sequence[str], notes: Sequence[str] = ()) -> None:
    """Print the tables and notes, write the JSON results file (atomically) and say where it went.
    ``seconds`` counts from :func:`parse_args`."""
    for t in tables:
        print()
        print(t)
    for n in notes:
        print(n)
    doc = {
        "benchmark": name,
        "quick": bool(args.quick),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", f"benchmarks/{name}.py", *map(shown_path, sys.argv[1:])]),
        "machine": dict(machine_info, load_average_at_end=_load_average()),
        "seconds": round(time.perf_counter() - _STARTED, 1) if _STARTED is not None else None,
        "results": results,
        "tables": list(tables),
        "notes": list(notes),
    }
    from tf_mtvib.runs import write_json

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    print(f"\nwrote {path}")


def shown_path(arg: str) -> str:
    """A command-line argument as a results file may record it: a path in this checkout relative to it, one
    under the home directory from ``~``; no machine's absolute path."""
    for root, shown in ((REPO, ""), (pathlib.Path.home(), "~/")):
        prefix = f"{root.resolve().as_posix()}/"
        if arg.startswith(prefix):
            return shown + arg[len(prefix):]
        if "=" in arg and arg.split("=", 1)[1].startswith(prefix):
            key, value = arg.split("=", 1)
            return f"{key}={shown_path(value)}"
    return arg


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def summarize(paths: Sequence[pathlib.Path]) -> str:
    """Markdown: for each results file, the machine, date, table and notes (for the README)."""
    parts = []
    for path in paths:
        doc = json.loads(pathlib.Path(path).read_text())
        m = doc["machine"]
        load = [m.get("load_average_at_start"), m.get("load_average_at_end")]
        loads = " / ".join(f"{l[0]:.1f}" for l in load if l)
        parts.append(f"### {doc['benchmark']}{' (--quick)' if doc['quick'] else ''}\n\n"
                     f"`{doc['command']}`, {doc['date'][:16].replace('T', ' ')} UTC, {doc['seconds']:.0f} s; "
                     f"{machine_line(m).split(', load')[0]}; 1-minute load average at start / end: {loads}.\n\n"
                     + "\n\n".join(doc["tables"]) + "\n\n" + "\n".join(f"- {n}" for n in doc["notes"]))
    return "\n\n".join(parts) + "\n"


README = HERE / "README.md"
README_BEGIN = "<!-- BEGIN GENERATED: python benchmarks/common.py --readme -->"
README_END = "<!-- END GENERATED: python benchmarks/common.py --readme -->"
#: The order of the README's sections (results files not named here follow, by name).
README_ORDER = ("train", "allocator", "torch", "precision", "precision_tta", "precision_float16", "load", "pipeline", "inference", "robustness", "multiworker")


def results_files(results_dir: pathlib.Path = RESULTS) -> List[pathlib.Path]:
    """The committed results files, in :data:`README_ORDER` (quick smoke results left out)."""
    files = [f for f in pathlib.Path(results_dir).glob("*.json") if not json.loads(f.read_text()).get("quick")]
    rank = lambda f: (README_ORDER.index(f.stem) if f.stem in README_ORDER else len(README_ORDER), f.stem)
    return sorted(files, key=rank)


def write_readme(readme: pathlib.Path = README, paths: Optional[Sequence[pathlib.Path]] = None) -> str:
    """Replace the generated block of the benchmarks README with :func:`summarize` of the results files."""
    return replace_block(readme, README_BEGIN, README_END, summarize(paths if paths is not None else results_files()))


def replace_block(path: pathlib.Path, begin: str, end: str, body: str) -> str:
    """Replace the text between the markers ``begin`` and ``end`` of ``path`` with ``body``; the new text."""
    text = pathlib.Path(path).read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no {begin!r} ... {end!r} block to replace")
    head, rest = text.split(begin, 1)
    text = f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}"
    pathlib.Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------
# The project README's training section: speed-up and accuracy per CPU type
# --------------------------------------------------------------------------
PROJECT_README = HERE.parent / "README.md"
SPEED_BEGIN = "<!-- BEGIN GENERATED: python benchmarks/common.py --readme (training speed) -->"
SPEED_END = "<!-- END GENERATED: python benchmarks/common.py --readme (training speed) -->"
#: The training-step variants of ``bench_torch.py``, as train.py's flags.
SPEED_VARIANTS = (("keras_mixed_bfloat16", "`--precision mixed_bfloat16`"),
                  ("keras_float32_fused_bn", "`--fused-batchnorm`"),
                  ("keras_mixed_bfloat16_fused_bn", "both"))


def _cpu_label(doc: Mapping[str, Any]) -> str:
    """The CPU of a results file and its bf16/fp16 ISA flags (files from before the machine record named
    them: the flags ``bench_torch``'s peak read)."""
    m, keys = doc["machine"], ("amx_bf16", "avx512_bf16", "avx512_fp16")
    if m.get("isa") is not None:
        isa = [f for f in m["isa"] if f in keys]
    else:
        peak = (doc.get("results") or {}).get("peak") or {}
        isa = [f for f in keys if peak.get(f)] if peak else None
    return f"{m['cpu_model']} ({'ISA not recorded' if isa is None else ', '.join(isa) or 'no bf16 ISA'})"


#: The issue "Speed"'s goal for the fast preset: training seconds to the paper's targets, per seed
FAST_GOAL_SECONDS = 1_800


def training_speed(results_dir: pathlib.Path = RESULTS) -> str:
    """Markdown for the project README: per CPU type (each ``bench_torch`` results file), the library's
    training step with each of ``--precision mixed_bfloat16`` and ``--fused-batchnorm`` against its float32
    step, as the ratio of median step times in one interleaved run; and the accuracy cost of bfloat16 from
    ``bench_precision --parts parity`` (paired seeds)."""
    results_dir = pathlib.Path(results_dir)
    lines = ["Training step speed against the float32 step on the same machine (MultiMNIST, batch 200; ratio of "
             "median step times, one interleaved run per CPU; `benchmarks/bench_torch.py`):", "",
             "| CPU (bf16 ISA) | model | float32 img/s | " + " | ".join(label for _, label in SPEED_VARIANTS)
             + " | load at start | source |", "|---|---|---:|" + "---:|" * len(SPEED_VARIANTS) + "---:|---|"]
    for f in sorted(results_dir.glob("torch*.json")):
        doc = json.loads(f.read_text())
        if doc.get("quick"):
            continue
        m = doc["machine"]
        for row in doc["results"]["rows"]:
            ips = row["images_per_second"]
            cells = [f"{ips[k] / ips['keras_float32']:.2f}x" if k in ips else "not measured" for k, _ in SPEED_VARIANTS]
            load = (m.get("load_average_at_start") or ["-"])[0]
            lines.append(f"| {_cpu_label(doc)} | {row['model']} | {ips['keras_float32']:,.0f} | " + " | ".join(cells)
                         + f" | {load} | `{f.name}`, {doc['date'][:10]} |")
    fast = False      # whether any file measured the fast preset (parity or time to target)
    for parity in sorted(results_dir.glob("precision*.json")):
        doc = json.loads(parity.read_text())
        runs_ = doc["results"].get("parity", [])
        if doc.get("quick") or not runs_:
            continue
        by = {(r["model"], r["precision"], r["seed"]): r for r in runs_}
        parts = []
        for model in sorted({r["model"] for r in runs_}):
            for variant in dict.fromkeys(r["precision"] for r in runs_ if r["model"] == model):
                if variant == "float32":
                    continue
                seeds = sorted(s for (m_, p, s) in by if m_ == model and p == "float32" and (m_, variant, s) in by)
                if not seeds:
                    continue
                first = by[(model, "float32", seeds[0])]
                tasks = [t for t in first["accuracy"] if t != "joint"]
                diffs = {t: [100 * (by[(model, variant, s)]["accuracy"][t] - by[(model, "float32", s)]["accuracy"][t])
                             for s in seeds] for t in tasks}
                if len(seeds) == 1:    # one pair: no spread to state
                    parts.append(f"{model}, `{variant}` (seed {seeds[0]}, one pair): " + ", ".join(
                        f"{t} {d[0]:+.1f}" for t, d in diffs.items()))
                    continue
                parts.append(f"{model}, `{variant}` (seeds {', '.join(str(s) for s in seeds)}): " + ", ".join(
                    f"{t} {sum(d) / len(d):+.1f} (seeds {min(d):+.1f} to {max(d):+.1f})" for t, d in diffs.items()))
        if parts:
            fast = fast or first["preset"] == "fast"
            lines += ["", f"Accuracy minus float32's, in points, mean over paired seeds (`--preset {first['preset']}`, "
                      f"{first['epochs']} epochs on {first['num_train']:,} images; {_cpu_label(doc)}; `{parity.name}`, "
                      f"{doc['date'][:10]}): " + "; ".join(parts) + "."]
    for tta in sorted(results_dir.glob("precision*.json")):
        doc = json.loads(tta.read_text())
        rows = [r for r in doc["results"].get("tta", []) if r.get("preset") == "fast" and r.get("target") == "paper"]
        if doc.get("quick") or not rows:
            continue
        fast = True
        parts = []
        for model in dict.fromkeys(r["model"] for r in rows):
            for precision in dict.fromkeys(r["precision"] for r in rows if r["model"] == model):
                got = [r for r in rows if r["model"] == model and r["precision"] == precision]
                secs = [r["reached"]["all"]["train_seconds"] for r in got if "all" in r["reached"]]
                seeds = ", ".join(str(r["seed"]) for r in got)
                text = f"{model}, `{precision}` ({'seeds' if len(got) > 1 else 'seed'} {seeds}): "
                if len(secs) > 1:
                    text += (f"{sum(secs) / len(secs):,.0f} s mean (seeds {min(secs):,.0f} to {max(secs):,.0f}); "
                             f"{sum(x <= FAST_GOAL_SECONDS for x in secs)} of {len(got)} within {FAST_GOAL_SECONDS:,} s")
                elif secs:
                    text += (f"{secs[0]:,.0f} s, {'within' if secs[0] <= FAST_GOAL_SECONDS else 'over'} "
                             f"{FAST_GOAL_SECONDS:,} s (one seed)")
                else:
                    text += "targets not reached"
                if len(secs) < len(got) and secs:
                    text += f", {len(got) - len(secs)} not reached"
                ratios = [r["speedup_vs_float32"] for r in got if r.get("speedup_vs_float32")]
                if ratios:
                    text += f"; float32's time over this: {sum(ratios) / len(ratios):.2f}x"
                parts.append(text)
        first = rows[0]
        lines += ["", f"Time to the paper's accuracy at `--preset fast` (training seconds, evaluation excluded, until "
                  f"every task's clean test accuracy reaches its model's Table III row less one point; "
                  f"{first['num_train']:,} training images; {_cpu_label(doc)}; load at start "
                  f"{(doc['machine'].get('load_average_at_start') or ['-'])[0]}; `{tta.name}`, {doc['date'][:10]}; "
                  "`benchmarks/bench_precision.py --parts tta --tta-preset fast --target paper`): "
                  + "; ".join(parts) + "."]
    if not fast:
        lines += ["", "Not yet measured at the `fast` preset."]
    return "\n".join(lines) + "\n"


def write_training_speed(readme: pathlib.Path = PROJECT_README, results_dir: pathlib.Path = RESULTS) -> str:
    """Replace the project README's training-speed block with :func:`training_speed`."""
    return replace_block(readme, SPEED_BEGIN, SPEED_END, training_speed(results_dir))


if __name__ == "__main__":   # python benchmarks/common.py [--readme] [results/*.json]
    args = sys.argv[1:]
    if args[:1] == ["--readme"]:
        write_readme(README, [pathlib.Path(a) for a in args[1:]] or None)
        write_training_speed()
        print(f"wrote the generated blocks of {README} and {PROJECT_README}")
    else:
        print(summarize([pathlib.Path(a) for a in args] or results_files()), end="")
