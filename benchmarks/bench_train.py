"""Training throughput of every model, against a minimal hand-written Keras model.

For each data set and model this times training steps (images per second) of

* ``library``: ``tf_mtvib.models.build_model(...)`` compiled as ``train.py``
  compiles it (Adam from ``train.make_optimizer``, ``jit_compile=False``);
* ``reference``: the same architecture written by hand from the architecture
  table (``CONV_TRUNKS``, ``SHARED_FC``, ...), with no ``tf_mtvib`` code in
  the training step: a functional model and a plain
  ``compile(loss=..., loss_weights=...)`` for the fixed-weight models
  (stl, gs, and stvib whose ``beta * KL`` is an ``add_loss``), and a
  few-line custom ``train_step`` with the same uncertainty-weighted loss
  (plus ``beta * KL`` for mtvib) for uwl and mtvib;
* ``library_xla``: the library model compiled with ``jit_compile=True``;
* ``library_bf16``: the library model built under ``--precision
  mixed_bfloat16`` (``--no-bf16`` skips it);

on one synthetic batch of the data set's shape (held in memory as tensors),
with the same batch size and optimizer, in one process. The three alternate
step by step: each round is one ``train_on_batch`` step of each (library,
reference, XLA, then XLA, reference, library, ...), after three untimed
warm-up steps each (tracing, XLA compilation). Reported: images/s per
variant (batch / median step time), the library/reference ratio (the
library's overhead; target >= 0.95) and the XLA/no-XLA ratio, both as the
median [quartiles] of the per-round ratios: a step of one is always timed
next to a step of the other, so a change in the machine's load between
rounds cancels out. Each row also gives the FLOPs of one training step from
the layer shapes and the share of the CPU's peak the library reaches
(``flops.py``: float32 against the float32 peak, bfloat16 against the
bfloat16 peak), and the bfloat16/float32 speed ratio.

MultiMNIST and MultiFashion have the same input shape (36x36x1) and class
counts (10 and 10), hence the same network: only MultiMNIST is run.

    python benchmarks/bench_train.py [--quick] [--datasets multimnist,mtfl] [--models stl,gs,...] [--no-bf16]
"""
from __future__ import annotations

import time

import common
from tf_mtvib.datasets.spec import get_spec
from tf_mtvib.reproduce.paper import PAPER_MODELS as MODELS, TABLE_NUMBER


def _one_per_network(datasets):
    """The data sets, less each one whose network (input shape and class counts) an earlier one has."""
    seen, out = set(), []
    for d in datasets:
        spec = get_spec(d)
        key = (spec.input_shape, tuple(spec.num_classes.values()))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return tuple(out)


#: The paper's data sets, one per network: MultiFashion has MultiMNIST's (36x36x1, 10 + 10 classes).
DATASETS = _one_per_network(TABLE_NUMBER)


# --------------------------------------------------------------------------
# The hand-written reference models
# --------------------------------------------------------------------------
def reference_model(name: str, spec, hp: dict, learning_rate: float, jit_compile: bool = False):
    """The architecture of ``name`` written with plain Keras layers and a plain loss."""
    import keras
    import tensorflow as tf

    from tf_mtvib.models import CONV_TRUNKS, SHARED_FC, TASK_FC, VIB_DECODER_FC, VIB_ENCODER_FC

    L = keras.layers
    tasks = spec.task_names
    classes = spec.num_classes

    def fc(x, units):   # FC + BN + ReLU, every hidden FC of Tables I-II
        return L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))

    def trunk(x, p=""):
        t = CONV_TRUNKS[spec.input_shape[0]]
        for i in range(t.blocks):
            x = L.Conv2D(t.filters, t.kernel, strides=t.stride, padding="valid", name=f"{p}conv{i}")(x)
            x = L.BatchNormalization(name=f"{p}bn{i}")(x)
            x = L.ReLU()(x)
            x = L.MaxPooling2D(t.pool)(x)
        return L.Flatten()(x)

    class Gaussian(L.Layer):
        """z = mu + sigma * eps, sigma = softplus(raw - 5) + 1e-5; adds beta * mean KL(N(mu, sigma) || N(0, I)).

        paper head: mu and raw from two FC + BN + ReLU; linear head: one Dense to 2k.
        """

        def __init__(self, k, beta, head, **kw):
            super().__init__(**kw)
            self.k, self.beta, self.head = k, beta, head
            if head == "linear":
                self.dense = L.Dense(2 * k)
            else:
                self.heads = [(L.Dense(k), L.BatchNormalization()) for _ in range(2)]

        def build(self, shape):
            if self.head == "linear":
                self.dense.build(shape)
            else:
                for dense, bn in self.heads:
                    dense.build(shape)
                    bn.build(tuple(shape[:-1]) + (self.k,))

        def compute_output_shape(self, shape):
            return tuple(shape[:-1]) + (self.k,)

        def call(self, h, training=None):
            if self.head == "linear":
                mu, raw = tf.split(self.dense(h), 2, axis=-1)
            else:
                mu, raw = (tf.nn.relu(bn(dense(h), training=training)) for dense, bn in self.heads)
            sigma = tf.nn.softplus(raw - 5.0) + 1e-5
            kl = 0.5 * tf.reduce_sum(tf.square(mu) + tf.square(sigma) - 1.0 - 2.0 * tf.math.log(sigma), axis=-1)
            self.add_loss(self.beta * tf.reduce_mean(kl))
            return mu + sigma * tf.random.normal(tf.shape(mu)) if training else mu

    def vib_tower(x, p=""):
        h = x
        for u in VIB_ENCODER_FC:
            h = fc(h, u)
        return Gaussian(hp["latent_dim"], hp["beta"], hp["latent_head"], name=f"{p}latent")(h)

    def vib_decoder(z, t):
        h = z
        for u in VIB_DECODER_FC:
            h = fc(h, u)
        return L.Dense(classes[t], name=t)(h)

    image = keras.Input(spec.input_shape)
    if name in ("gs", "uwl"):
        h = fc(trunk(image), SHARED_FC)
        out = {t: L.Dense(classes[t], name=t)(fc(h, TASK_FC)) for t in tasks}
    elif name == "stl":
        out = {}
        for t in tasks:
            h = fc(trunk(image, f"{t}_"), SHARED_FC)
            out[t] = L.Dense(classes[t], name=t)(fc(h, TASK_FC))
    elif name == "stvib":
        out = {t: vib_decoder(vib_tower(trunk(image, f"{t}_"), f"{t}_"), t) for t in tasks}
    elif name == "mtvib":
        z = vib_tower(trunk(image))
        out = {t: vib_decoder(z, t) for t in tasks}
    else:
        raise ValueError(name)
    net = keras.Model(image, out)
    adam = keras.optimizers.Adam(learning_rate)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if name in ("stl", "gs", "stvib"):   # fixed weights: a plain compile
        w = 1.0 / len(tasks) if name == "gs" else 1.0
        net.compile(optimizer=adam, loss={t: ce for t in tasks}, loss_weights={t: w for t in tasks},
                    jit_compile=jit_compile)
        return net

    class UncertaintyWeighted(keras.Model):
        """sum_k exp(-2 s_k) CE_k + s_k (+ the layers' beta * KL), by hand."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.s = self.add_weight(shape=(len(tasks),), initializer="zeros", name="log_sigma")
            self.built = True

        def call(self, x, training=None):
            return self.net(x, training=training)

        def train_step(self, data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                logits = self.net(x, training=True)
                loss = tf.add_n([tf.exp(-2.0 * self.s[i]) * ce(y[t], logits[t]) + self.s[i]
                                 for i, t in enumerate(tasks)] + self.net.losses)
            variables = self.trainable_variables
            self.optimizer.apply(tape.gradient(loss, variables), variables)
            return {"loss": loss}

    model = UncertaintyWeighted(net)
    model.compile(optimizer=adam, jit_compile=jit_compile)
    return model


def library_model(name: str, spec, learning_rate: float, jit_compile: bool, precision: str = "float32",
                  fused_batchnorm: bool = False):
    """The library model, built and compiled as train.py builds and compiles it (``--precision precision``)."""
    from tf_mtvib.models import build_model
    from tf_mtvib.precision import policy_scope
    from tf_mtvib.train import TRAINING_DEFAULTS, make_optimizer

    with policy_scope(precision):
        model = build_model(name, spec, fused_batchnorm=fused_batchnorm or None)
    # a constant learning rate: epochs and batch_size only complete the config (a cosine schedule would use epochs)
    training = dict(TRAINING_DEFAULTS, epochs=1, batch_size=1, learning_rate=learning_rate, precision=precision)
    model.compile(optimizer=make_optimizer(training, steps_per_epoch=100), jit_compile=jit_compile)
    return model


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
def synthetic(spec, batch: int, seed: int = 0):
    """One batch of uniform images in [0, 1] and random labels, repeated forever."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.random((batch, *spec.input_shape), dtype=np.float32)
    y = {t: rng.integers(0, n, batch).astype(np.int64) for t, n in spec.num_classes.items()}
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def fit_timer(model, ds, steps: int):
    """A function that runs ``fit`` for ``steps`` steps and returns the median
    step time times ``steps - 1``: the duration of the timed steps, robust to
    a short burst of load from other jobs. The first step (and ``fit``'s
    set-up) is never timed; each call's plain wall time from the end of the
    first step to the end of the last is kept in ``run.totals``."""
    import keras

    class Stamps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    stamps: list = []
    cb = Stamps()

    def run():
        stamps.clear()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[cb], shuffle=False)
        run.totals.append(stamps[-1] - stamps[0])
        return common.median([b - a for a, b in zip(stamps, stamps[1:])]) * (len(stamps) - 1)

    run.totals = []
    return run


def synthetic_batch(spec, batch: int, seed: int = 0):
    """One batch of uniform images in [0, 1] and random labels, as tensors."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch, *spec.input_shape), dtype=np.float32))
    y = {t: tf.constant(rng.integers(0, n, batch).astype(np.int64)) for t, n in spec.num_classes.items()}
    return x, y


def bench_one(dataset: str, name: str, batch: int, rounds: int, learning_rate: float, xla: bool,
              bf16: bool = False, peak=None):
    import keras

    import flops

    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import DEFAULT_HPARAMS

    spec = get_spec(dataset)
    keras.utils.set_random_seed(0)
    x, y = synthetic_batch(spec, batch)
    models = {"library": library_model(name, spec, learning_rate, False),
              "reference": reference_model(name, spec, dict(DEFAULT_HPARAMS), learning_rate)}
    if xla:
        models["library_xla"] = library_model(name, spec, learning_rate, True)
    if bf16:
        models["library_bf16"] = library_model(name, spec, learning_rate, False, precision="mixed_bfloat16")
    params = {k: int(m.count_params()) for k, m in models.items()}
    if params["library"] != params["reference"]:
        raise AssertionError(f"{dataset}/{name}: the reference has {params['reference']:,} parameters, "
                             f"the library model {params['library']:,}: not the same architecture")
    def step(model):
        def run():
            model.train_on_batch(x, y)   # returns once the step has run (its logs are fetched as numbers)
        return run

    fns = {k: step(m) for k, m in models.items()}
    t0 = time.perf_counter()
    for _ in range(3):   # warm-up: tracing, XLA compilation, first steps
        for f in fns.values():
            f()
    warm = time.perf_counter() - t0
    times = common.interleave(fns, rounds, warmup=0, log_every=max(1, rounds // 4),
                              log=lambda m: common.log(f"{dataset}/{name} {m}"))
    out = {"dataset": dataset, "model": name, "batch_size": batch, "rounds": rounds,
           "parameters": params["library"], "warmup_seconds": round(warm, 1), "step_seconds": times,
           "images_per_second": {k: batch / common.median(v) for k, v in times.items()}}
    # speed ratios = inverse time ratios, per round (one step of each)
    out["library_vs_reference"] = common.ratio_stats(times["reference"], times["library"])
    if xla:
        out["xla_vs_no_xla"] = common.ratio_stats(times["library"], times["library_xla"])
    if bf16:
        out["bf16_vs_float32"] = common.ratio_stats(times["library"], times["library_bf16"])
    fl = flops.training_flops(models["library"])
    out["flops_per_image"] = fl
    if peak is not None:
        out["percent_of_peak"] = {
            k: flops.percent_of_peak(v, fl["training_per_example"],
                                     peak["bf16_peak_flops"] if k == "library_bf16" else peak["fp32_peak_flops"])
            for k, v in out["images_per_second"].items()}
    keras.backend.clear_session()
    return out


def main(argv=None) -> int:
    p = common.make_parser("bench_train", __doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated data sets")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    p.add_argument("--batch-size", default="multimnist=100,mtfl=32",
                   help="batch size per data set (one number for all); multimnist: the cpu preset's")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True variant")
    p.add_argument("--no-bf16", action="store_true", help="skip the mixed_bfloat16 variant")
    args = common.parse_args(p, argv)
    rounds_arg = args.rounds or ("3" if args.quick else "multimnist=60,mtfl=25")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batch = common.per_dataset(args.batch_size, datasets, "--batch-size", p)
    rounds = common.per_dataset(rounds_arg, datasets, "--rounds", p)
    if args.quick:
        batch = {d: min(b, 16) for d, b in batch.items()}
        if args.datasets == ",".join(DATASETS):
            datasets = ["multimnist"]
        if args.models == ",".join(MODELS):
            models = ["gs", "mtvib"]   # a plain-compile reference and a custom-train_step one
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")

    import tensorflow as tf  # noqa: F401  (after the parser, so --help is fast)

    import flops

    info = common.machine()
    peak = flops.cpu_peak()
    print(f"machine: {common.machine_line(info)}")
    results = []
    for d in datasets:
        for m in models:
            common.log(f"{d}/{m}: building and warming up")
            results.append(bench_one(d, m, batch[d], rounds[d], args.learning_rate, not args.no_xla,
                                     not args.no_bf16, peak))
    rows = []
    for r in results:
        ips, pct = r["images_per_second"], r["percent_of_peak"]
        rows.append([r["dataset"] + (" (= multifashion)" if r["dataset"] == "multimnist" else ""), r["model"],
                     r["batch_size"], f"{r['parameters']:,}", ips["library"], ips["reference"],
                     common.ratio_cell(r["library_vs_reference"]),
                     ips.get("library_xla"), common.ratio_cell(r.get("xla_vs_no_xla")),
                     r["flops_per_image"]["training_per_example"] / 1e6, f"{pct['library']:.1f}%",
                     ips.get("library_bf16"), common.ratio_cell(r.get("bf16_vs_float32")),
                     f"{pct['library_bf16']:.1f}%" if "library_bf16" in pct else None])
    headers = ["data set", "model", "batch", "params", "library img/s", "reference img/s",
               "library/reference [quartiles]", "library XLA img/s", "XLA/no-XLA [quartiles]",
               "MFLOP/step/img", "library % of fp32 peak", "library bf16 img/s", "bf16/fp32 [quartiles]",
               "bf16 % of bf16 peak"]
    tab = common.table(headers, rows)
    worst = min(r["library_vs_reference"]["median_of_round_ratios"] for r in results)
    notes = ["images/s: batch / median step time over the interleaved rounds ("
             + ", ".join(f"{d}: {rounds[d]} steps of each variant" for d in datasets)
             + "); ratios: median [quartiles] of the per-round ratios",
             "multifashion has the same network as multimnist (36x36x1 inputs, 10 + 10 classes); not run separately",
             f"lowest library/reference ratio: {worst:.3f} (target >= 0.95)",
             f"FLOPs: {flops.COUNTING_RULE}",
             f"peak: {peak['formula']} ({peak['fma_source']}; clock from /proc/cpuinfo); bf16: the library "
             f"built with --precision mixed_bfloat16, against the bfloat16 peak"]
    common.write_results(args.output, "bench_train", args, info,
                         {"rows": results, "min_library_vs_reference": worst, "peak": peak}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
