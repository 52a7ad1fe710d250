"""Multi-worker training on one machine: ``python -m tf_mtvib.launch --workers 2 -- <train.py arguments>``.

Starts ``--workers`` processes of ``python -m tf_mtvib.train <arguments>
--strategy multi-worker``, each with its own ``TF_CONFIG`` naming free
localhost ports, each pinned to its share of this process's CPU cores
(``os.sched_setaffinity``) and told to use that many threads
(``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``, ``OMP_NUM_THREADS``),
with glibc's allocator thresholds raised (:mod:`tf_mtvib.runtime`).
The chief's output is streamed to this terminal; the other workers' output
goes to ``<log-dir>/worker-<i>.log`` (shown when a worker fails). If a
worker fails, or on Ctrl-C / SIGTERM, every worker is stopped, and the exit
status is the failing worker's (128 + signal number for a signal), 130 after
Ctrl-C. This is for trying multi-worker training (and its fault tolerance)
on one machine; on real machines set ``TF_CONFIG`` on each and run
``train.py`` there (see the README).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from . import runs
from .distributed import MULTI_WORKER, tf_config
from .runtime import child_environment

__all__ = ["free_ports", "core_shares", "worker_command", "main"]

_GRACE_SECONDS = 10.0


def free_ports(n: int, host: str = "localhost") -> List[int]:
    """``n`` distinct ports the OS reports free (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def core_shares(n: int, cores: Optional[Sequence[int]] = None) -> List[List[int]]:
    """Split ``cores`` (default: the cores this process may use) into ``n`` contiguous shares;
    with fewer cores than workers, workers share cores round-robin (one core each)."""
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = list(cores)
    if n <= len(cores):
        base, extra = divmod(len(cores), n)
        out, start = [], 0
        for i in range(n):
            size = base + (1 if i < extra else 0)
            out.append(cores[start:start + size])
            start += size
        return out
    return [[cores[i % len(cores)]] for i in range(n)]


def worker_command(train_args: Sequence[str]) -> List[str]:
    """The command each worker runs: ``train.py``'s arguments plus ``--strategy multi-worker``."""
    return [sys.executable, "-m", "tf_mtvib.train", *train_args, "--strategy", MULTI_WORKER]


def _make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_mtvib.launch", description=__doc__.split("\n\n")[0],
                                usage="python -m tf_mtvib.launch [--workers N] [options] -- <train.py arguments>")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--host", default="localhost", help="address the workers listen on (default localhost)")
    p.add_argument("--log-dir", type=pathlib.Path,
                   help="where the non-chief workers' output goes (default: a new temporary directory)")
    p.add_argument("--no-pin", action="store_true", help="do not restrict each worker to its share of the cores")
    return p


def _check_train_args(train_args: List[str], parser: argparse.ArgumentParser) -> List[str]:
    """Refuse flags the launcher sets; give every worker the same --output-dir. The rest of the
    arguments is train.py's to check (without TensorFlow in this process)."""
    for flag in ("--strategy", "--cpu-replicas"):
        if any(a == flag or a.startswith(flag + "=") for a in train_args):
            parser.error(f"do not pass {flag}: the launcher runs train.py with --strategy {MULTI_WORKER}")
    known = argparse.ArgumentParser(add_help=False)
    for flag in ("--dataset", "--model", "--output-dir"):
        known.add_argument(flag)
    known.add_argument("--resume", action="store_true")
    ns, _ = known.parse_known_args(train_args)
    if ns.output_dir is None and not ns.resume and ns.dataset and ns.model:
        train_args = [*train_args, "--output-dir", str(runs.default_run_dir(ns.dataset, ns.model))]
    return train_args


def _preexec(cores: Optional[List[int]]):
    def run():
        if cores is not None:
            os.sched_setaffinity(0, cores)
        with contextlib.suppress(Exception):   # die with the launcher (Linux): no orphaned workers
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    return run


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every running worker, SIGKILL those still running after a grace period."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _make_parser()
    if "--" in argv:
        cut = argv.index("--")
        own, train_args = argv[:cut], argv[cut + 1:]
    else:
        own, train_args = argv, []
    args = parser.parse_args(own)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if not train_args:
        parser.error("give train.py's arguments after --, e.g. -- --dataset multimnist --model gs --preset smoke")
    train_args = _check_train_args(train_args, parser)

    ports = free_ports(args.workers, args.host)
    addresses = [f"{args.host}:{p}" for p in ports]
    shares = core_shares(args.workers)
    log_dir = args.log_dir or pathlib.Path(tempfile.mkdtemp(prefix="tf_mtvib-launch-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    command = worker_command(train_args)
    procs: List[subprocess.Popen] = []
    logs: Dict[int, pathlib.Path] = {}

    def on_signal(signum, frame):
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(args.workers):
            threads = str(len(shares[i]))
            env = child_environment(TF_CONFIG=tf_config(addresses, i), PYTHONUNBUFFERED="1",
                                    TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
                                    OMP_NUM_THREADS=threads)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            if i == 0:
                out = err = None   # the chief streams to this terminal
            else:
                logs[i] = log_dir / f"worker-{i}.log"
                out = open(logs[i], "w")
                err = subprocess.STDOUT
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err,
                                          preexec_fn=_preexec(None if args.no_pin else shares[i])))
            if out is not None:
                out.close()
            print(f"[launch] worker {i} pid {procs[-1].pid} at {addresses[i]}, cores "
                  f"{'any' if args.no_pin else shares[i]}" + (f", log {logs[i]}" if i else " (chief)"),
                  file=sys.stderr, flush=True)
        while True:
            for i, p in enumerate(procs):
                rc = p.poll()
                if rc is not None and rc != 0:
                    print(f"[launch] worker {i} (pid {p.pid}) exited with status {rc}; stopping the others",
                          file=sys.stderr, flush=True)
                    _stop(procs)
                    if i in logs:
                        print(f"[launch] last lines of {logs[i]}:\n{_tail(logs[i])}", file=sys.stderr, flush=True)
                    return _exit_code(rc)
            if all(p.poll() == 0 for p in procs):
                print(f"[launch] all {len(procs)} workers finished", file=sys.stderr, flush=True)
                return 0
            time.sleep(0.2)
    except (_Interrupted, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"[launch] {signal.Signals(signum).name}: stopping {len(procs)} worker(s)", file=sys.stderr, flush=True)
        _stop(procs)
        return 128 + int(signum)
    finally:
        _stop(procs)
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
