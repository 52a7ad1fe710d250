"""The library's training step against the same models written in PyTorch, float32 and bfloat16.

MTVIB and GS of Table I (36x36 MultiMNIST) are written here in plain
PyTorch from the architecture table of :mod:`tf_mtvib.models` (the paper's
Tables I-II: every convolution and every hidden fully connected layer
followed by BatchNorm + ReLU, the Gaussian latent's mean and scale heads
included, only the classifiers without), with the same loss: GS
``sum_k w_k CE_k`` (w_k = 1/2), MTVIB ``sum_k exp(-2 s_k) CE_k + s_k +
beta * mean KL`` (MTVIB eq. 23) with ``z = mu + sigma * eps`` and ``sigma =
softplus(h - 5) + 1e-5``. The script checks that each PyTorch model has
exactly the Keras model's parameter count (``count_params``: weights,
biases, BatchNorm's scale, offset and moving statistics, ``log_sigma``)
before timing anything.

Variants, timed in one process, one training step each per round, in
alternation (A B C D, D C B A, ...) after three untimed warm-up steps each:

* ``keras_float32``: ``tf_mtvib.models.build_model`` compiled as
  ``train.py`` compiles it (``train_on_batch``);
* ``torch_float32``: ``zero_grad``, forward, loss, ``backward``,
  ``torch.optim.Adam.step`` (eager, ``loss.item()`` at the end);
* ``keras_mixed_bfloat16``: the library model built under
  ``--precision mixed_bfloat16``;
* ``torch_bfloat16``: the same PyTorch step with the forward pass under
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the KL and the losses in
  float32, as in the library);
* with ``--fused-batchnorm``, also ``keras_float32_fused_bn`` and
  ``keras_mixed_bfloat16_fused_bn``: the library model built with
  ``fused_batchnorm=True`` (:class:`tf_mtvib.layers.FusedBatchNormalization`).

Same batch (one synthetic batch of uniform images and random labels held in
memory), same Adam (learning rate, betas, epsilon 1e-7 as Keras's),
BatchNorm with Keras's epsilon (1e-3) and the library's momentum. PyTorch
runs with as many threads as usable cores. Also reported: the FLOPs of one
training step from the layer shapes (``flops.py``, cross-checked against
``torch.utils.flop_counter`` on the PyTorch step) and the share of the CPU's
peak that each variant reaches (float32 against the float32 peak, bfloat16
against the bfloat16 peak).

    python benchmarks/bench_torch.py [--quick] [--models gs,mtvib] [--batch-size 200] [--no-bf16]

Needs PyTorch (``pip install -e ".[bench]"``; see benchmarks/README.md for a
CPU-only build).
"""
from __future__ import annotations

import time

import common

MODELS = ("gs", "mtvib")
BN_EPSILON = 1e-3          # keras.layers.BatchNormalization's default
ADAM_EPSILON = 1e-7        # keras.optimizers.Adam's default


# --------------------------------------------------------------------------
# The PyTorch models (Tables I-II)
# --------------------------------------------------------------------------
def torch_model(name: str, spec, hp: dict):
    """GS or MTVIB of ``spec``'s input size in PyTorch: ``module(x) -> ({task: logits}, kl or None)``
    and ``module.loss(logits, y, kl)``."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from tf_mtvib.models import (BN_MOMENTUM, CONV_TRUNKS, SHARED_FC, TASK_FC, VIB_DECODER_FC, VIB_ENCODER_FC,
                                 flatten_size)

    momentum = 1.0 - BN_MOMENTUM       # PyTorch weighs the new batch statistic by `momentum`
    tasks = list(spec.task_names)
    classes = spec.num_classes

    def fc(fan_in, units):
        """FC + BN + ReLU: every hidden fully connected layer of Tables I-II."""
        return nn.Sequential(nn.Linear(fan_in, units), nn.BatchNorm1d(units, eps=BN_EPSILON, momentum=momentum),
                             nn.ReLU())

    def trunk():
        t = CONV_TRUNKS[spec.input_shape[0]]
        layers, channels = [], spec.input_shape[-1]
        for _ in range(t.blocks):
            layers += [nn.Conv2d(channels, t.filters, t.kernel, stride=t.stride),
                       nn.BatchNorm2d(t.filters, eps=BN_EPSILON, momentum=momentum), nn.ReLU(), nn.MaxPool2d(t.pool)]
            channels = t.filters
        return nn.Sequential(*layers, nn.Flatten())

    flat = flatten_size(spec)

    class GS(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk()
            self.shared = fc(flat, SHARED_FC)
            self.heads = nn.ModuleDict({t: nn.Sequential(fc(SHARED_FC, TASK_FC), nn.Linear(TASK_FC, classes[t]))
                                        for t in tasks})
            self.weights = {t: 1.0 / len(tasks) for t in tasks}

        def forward(self, x):
            h = self.shared(self.trunk(x))
            return {t: head(h) for t, head in self.heads.items()}, None

        def loss(self, logits, y, kl):
            return sum(self.weights[t] * F.cross_entropy(logits[t].float(), y[t]) for t in tasks)

    class MTVIB(nn.Module):
        def __init__(self):
            super().__init__()
            k = hp["latent_dim"]
            self.beta = hp["beta"]
            self.head = hp.get("latent_head", "linear")
            self.trunk = trunk()
            sizes = (flat,) + tuple(VIB_ENCODER_FC)
            self.encoder = nn.Sequential(*(fc(a, b) for a, b in zip(sizes, sizes[1:])))
            if self.head == "paper":        # Tables I-II: FC + BN + ReLU for the mean and for the scale
                self.loc_head, self.scale_head = fc(sizes[-1], k), fc(sizes[-1], k)
            else:                           # Alemi et al.: one linear layer to 2K
                self.projection = nn.Linear(sizes[-1], 2 * k)
            dec = (k,) + tuple(VIB_DECODER_FC)
            self.decoders = nn.ModuleDict({
                t: nn.Sequential(*(fc(a, b) for a, b in zip(dec, dec[1:])), nn.Linear(dec[-1], classes[t]))
                for t in tasks})
            self.log_sigma = nn.Parameter(torch.full((len(tasks),), float(hp["init_log_sigma"])))

        def forward(self, x):
            h = self.encoder(self.trunk(x))
            if self.head == "paper":
                loc, raw = self.loc_head(h), self.scale_head(h)
            else:
                loc, raw = self.projection(h).chunk(2, dim=-1)
            with torch.autocast("cpu", enabled=False):       # the distribution in float32
                loc, raw = loc.float(), raw.float()
                scale = F.softplus(raw - 5.0) + 1e-5
                kl = 0.5 * (loc.square() + scale.square() - 1.0 - 2.0 * scale.log()).sum(-1)
                z = loc + scale * torch.randn_like(loc) if self.training else loc
            return {t: dec(z) for t, dec in self.decoders.items()}, kl

        def loss(self, logits, y, kl):
            terms = [torch.exp(-2.0 * self.log_sigma[i]) * F.cross_entropy(logits[t].float(), y[t]) + self.log_sigma[i]
                     for i, t in enumerate(tasks)]
            return sum(terms) + self.beta * kl.mean()

    if name == "gs":
        return GS()
    if name == "mtvib":
        return MTVIB()
    raise ValueError(f"no PyTorch peer for model {name!r}; choose one of: {', '.join(MODELS)}")


def torch_count(module) -> int:
    """Parameters plus BatchNorm's running statistics: what Keras's ``count_params`` counts."""
    params = sum(p.numel() for p in module.parameters())
    stats = sum(b.numel() for n, b in module.named_buffers() if not n.endswith("num_batches_tracked"))
    return int(params + stats)


def torch_batch(spec, batch: int, seed: int = 0):
    """The synthetic batch of ``bench_train.synthetic_batch`` (same values) as NCHW PyTorch tensors."""
    import numpy as np
    import torch

    from bench_train import synthetic_batch

    x, y = synthetic_batch(spec, batch, seed)
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x.numpy(), (0, 3, 1, 2))))
    return xt, {t: torch.from_numpy(v.numpy()) for t, v in y.items()}


def torch_step(module, optimizer, x, y, bf16: bool):
    """One training step as a function; returns nothing (``loss.item()`` waits for it)."""
    import torch

    def run():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, kl = module(x)
        loss = module.loss(logits, y, kl)
        loss.backward()
        optimizer.step()
        loss.item()
    return run


def torch_counted_flops(module, optimizer, x, y) -> int:
    """FLOPs of one float32 training step as ``torch.utils.flop_counter`` counts them (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        torch_step(module, optimizer, x, y, bf16=False)()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------
def bench_one(dataset: str, name: str, batch: int, rounds: int, learning_rate: float, bf16: bool, peak,
              fused: bool = False) -> dict:
    import keras
    import torch

    import flops
    from bench_train import library_model, synthetic_batch
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import hparam_defaults

    spec = get_spec(dataset)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    x, y = synthetic_batch(spec, batch)
    xt, yt = torch_batch(spec, batch)
    variants = {"keras_float32": library_model(name, spec, learning_rate, False)}
    net = torch_model(name, spec, hparam_defaults())
    params = {"keras": int(variants["keras_float32"].count_params()), "torch": torch_count(net)}
    if params["keras"] != params["torch"]:
        raise AssertionError(
            f"{dataset}/{name}: the PyTorch model has {params['torch']:,} parameters (BatchNorm statistics included), "
            f"the library model {params['keras']:,}: not the same architecture (Tables I-II: BN + ReLU after every "
            f"hidden FC layer)")
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=ADAM_EPSILON)
    flop = flops.training_flops(variants["keras_float32"])
    counted = torch_counted_flops(net, opt, xt, yt) / batch
    fns = {"keras_float32": lambda: variants["keras_float32"].train_on_batch(x, y),
           "torch_float32": torch_step(net, opt, xt, yt, bf16=False)}
    if bf16:
        variants["keras_mixed_bfloat16"] = library_model(name, spec, learning_rate, False, precision="mixed_bfloat16")
        fns["keras_mixed_bfloat16"] = lambda: variants["keras_mixed_bfloat16"].train_on_batch(x, y)
        net16 = torch_model(name, spec, hparam_defaults())
        net16.train()
        opt16 = torch.optim.Adam(net16.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=ADAM_EPSILON)
        fns["torch_bfloat16"] = torch_step(net16, opt16, xt, yt, bf16=True)
    if fused:
        for v, precision in (("keras_float32_fused_bn", "float32"), ("keras_mixed_bfloat16_fused_bn", "mixed_bfloat16")):
            if precision == "mixed_bfloat16" and not bf16:
                continue
            variants[v] = library_model(name, spec, learning_rate, False, precision=precision, fused_batchnorm=True)
            fns[v] = lambda m=variants[v]: m.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(3):   # warm-up: tracing, oneDNN primitive creation, first steps
        for f in fns.values():
            f()
    warm = time.perf_counter() - t0
    times = common.interleave({k: (lambda f=f: (f(), None)[1]) for k, f in fns.items()}, rounds, warmup=0,
                              log_every=max(1, rounds // 4), log=lambda m: common.log(f"{dataset}/{name} {m}"))
    ips = {k: batch / common.median(v) for k, v in times.items()}
    out = {"dataset": dataset, "model": name, "batch_size": batch, "rounds": rounds, "parameters": params["keras"],
           "warmup_seconds": round(warm, 1), "step_seconds": times, "images_per_second": ips,
           "flops_per_image": flop, "torch_counted_flops_per_image": counted,
           "keras_vs_torch_float32": common.ratio_stats(times["torch_float32"], times["keras_float32"])}
    out["percent_of_peak"] = {
        k: flops.percent_of_peak(v, flop["training_per_example"],
                                 peak["bf16_peak_flops"] if "bfloat16" in k else peak["fp32_peak_flops"])
        for k, v in ips.items()}
    out["gflops_per_second"] = {k: v * flop["training_per_example"] / 1e9 for k, v in ips.items()}
    if bf16:
        out["keras_vs_torch_bfloat16"] = common.ratio_stats(times["torch_bfloat16"], times["keras_mixed_bfloat16"])
        out["bfloat16_vs_float32_keras"] = common.ratio_stats(times["keras_float32"], times["keras_mixed_bfloat16"])
        out["bfloat16_vs_float32_torch"] = common.ratio_stats(times["torch_float32"], times["torch_bfloat16"])
    if "keras_float32_fused_bn" in times:
        out["keras_fused_bn_vs_torch_float32"] = common.ratio_stats(times["torch_float32"], times["keras_float32_fused_bn"])
    if "keras_mixed_bfloat16_fused_bn" in times:
        out["keras_fused_bn_vs_torch_bfloat16"] = common.ratio_stats(times["torch_bfloat16"],
                                                                     times["keras_mixed_bfloat16_fused_bn"])
    keras.backend.clear_session()
    return out


def main(argv=None) -> int:
    p = common.make_parser("bench_torch", __doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="multimnist", help="comma-separated data sets (Table I: multimnist)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    p.add_argument("--batch-size", type=int, default=200, help="the paper's minibatch")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="the paper's Adam learning rate")
    p.add_argument("--no-bf16", action="store_true", help="float32 only")
    p.add_argument("--fused-batchnorm", action="store_true",
                   help="also time the library models with fused_batchnorm=True")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: the usable cores)")
    p.add_argument("--ghz", type=float, default=None, help="clock for the peak (default: /proc/cpuinfo's cpu MHz)")
    p.add_argument("--fma-bits", type=int, default=None, help="FMA datapath bits per cycle per core for the peak")
    args = common.parse_args(p, argv, rounds=(3, 40))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    rounds = args.rounds
    batch = min(args.batch_size, 16) if args.quick else args.batch_size
    try:
        import torch
    except ImportError:
        p.error("PyTorch is not installed: pip install -e \".[bench]\" (see benchmarks/README.md for a CPU-only build)")
    import tensorflow as tf  # noqa: F401

    import flops

    info = common.machine()
    threads = args.threads or info["cpus_usable"]
    torch.set_num_threads(threads)
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                torch_mkldnn=torch.backends.mkldnn.is_available(),
                torch_mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    peak = flops.cpu_peak(args.ghz, args.fma_bits)
    print(f"machine: {common.machine_line(info)}; PyTorch {torch.__version__} ({threads} threads)")
    print(peak["formula"])
    results = []
    for d in datasets:
        for m in models:
            common.log(f"{d}/{m}: building and warming up")
            results.append(bench_one(d, m, batch, rounds, args.learning_rate, not args.no_bf16, peak,
                                     args.fused_batchnorm))

    variants = ["keras_float32", "torch_float32"] + ([] if args.no_bf16 else ["keras_mixed_bfloat16", "torch_bfloat16"])
    if args.fused_batchnorm:
        variants += ["keras_float32_fused_bn"] + ([] if args.no_bf16 else ["keras_mixed_bfloat16_fused_bn"])
    speed_rows, peak_rows = [], []
    for r in results:
        ips, pct = r["images_per_second"], r["percent_of_peak"]
        speed_rows.append([r["dataset"], r["model"], r["batch_size"], f"{r['parameters']:,}"]
                          + [ips.get(v) for v in variants]
                          + [common.ratio_cell(r["keras_vs_torch_float32"]),
                             common.ratio_cell(r.get("keras_vs_torch_bfloat16")),
                             common.ratio_cell(r.get("bfloat16_vs_float32_keras")),
                             common.ratio_cell(r.get("bfloat16_vs_float32_torch"))]
                          + ([common.ratio_cell(r.get("keras_fused_bn_vs_torch_float32")),
                              common.ratio_cell(r.get("keras_fused_bn_vs_torch_bfloat16"))]
                             if args.fused_batchnorm else []))
        fl = r["flops_per_image"]
        peak_rows.append([r["dataset"], r["model"], fl["forward_per_example"] / 1e6, fl["training_per_example"] / 1e6,
                          r["torch_counted_flops_per_image"] / 1e6]
                         + [f"{r['gflops_per_second'][v]:.1f} ({pct[v]:.1f}%)" if v in pct else None for v in variants])
    speed = common.table(["data set", "model", "batch", "params"] + [f"{v} img/s" for v in variants]
                         + ["keras/torch float32", "keras/torch bfloat16", "bf16/f32 keras", "bf16/f32 torch"]
                         + (["keras fused BN/torch float32", "keras fused BN/torch bfloat16"]
                            if args.fused_batchnorm else []),
                         speed_rows)
    peaks = common.table(["data set", "model", "MFLOP fwd/img", "MFLOP step/img", "torch-counted MFLOP step/img"]
                         + [f"{v} GFLOP/s (% of peak)" for v in variants], peak_rows)
    notes = [f"images/s: batch / median step time over {rounds} interleaved rounds (one step of each variant per "
             f"round); ratios: speed ratios, median [quartiles] of the per-round ratios",
             f"FLOPs: {flops.COUNTING_RULE}; torch-counted: torch.utils.flop_counter on one float32 PyTorch step",
             f"peak: {peak['formula']} ({peak['fma_source']}; clock from /proc/cpuinfo unless --ghz); float32 "
             f"variants against the float32 peak, bfloat16 variants against the bfloat16 peak",
             f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, eager; Keras: the library model as "
             f"train.py compiles it (jit_compile=False)"]
    common.write_results(args.output, "bench_torch", args, info,
                         {"rows": results, "peak": peak, "variants": variants}, [speed, peaks], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
