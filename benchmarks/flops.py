"""Floating-point operations of a training step, from the layer shapes, and the CPU's peak rate.

Counting rule (the usual one for dense networks):

* forward: 2 FLOPs (a multiply and an add) per multiply-accumulate (MAC) of
  every ``Conv2D`` and ``Dense`` layer. A convolution has ``H_out * W_out *
  filters * k_h * k_w * C_in / groups`` MACs per image, a dense layer
  ``positions * units * input_dim`` (``positions`` = 1 for a ``(batch,
  features)`` input);
* one training step = forward + backward = 3 x forward, less the input
  gradient of the layers applied to the image: the backward pass computes,
  for every such layer, the gradient with respect to its weights and the one
  with respect to its input, each with as many MACs as the forward product,
  and the gradient with respect to the image itself is never computed;
* not counted: bias adds, BatchNorm, ReLU, pooling, softmax and the
  cross-entropy, the KL and the sampling of z, Adam's update. These are
  elementwise, O(activations + parameters) per image, against O(MACs) for the
  products above.

:func:`training_flops` also gives the plain ``3 x forward`` convention, which
counts that image gradient too (2 % of a MultiMNIST step, 14-16 % of an MTFL
step, whose first convolution is its largest layer).

Peak rate: ``cores x clock x FLOPs per cycle per core``, where FLOPs per
cycle = ``FMA datapath bits per cycle / 32`` float32 lanes x 2 (an FMA is a
multiply and an add). See :func:`cpu_peak` for where each factor comes from.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Dict, List, Optional

__all__ = ["layer_macs", "forward_flops", "training_flops", "cpu_peak", "COUNTING_RULE"]

COUNTING_RULE = ("FLOPs = 2 x multiply-accumulates of every Conv2D and Dense layer; a training step = 3 x forward "
                 "(backward: weight and input gradients, each as many MACs as forward) less the input gradient of "
                 "the layers applied to the image (not computed); bias, BatchNorm, ReLU, pooling, softmax, KL and "
                 "Adam not counted")


def _output_shape(layer):
    """The layer's output shape from its (single) node in a functional graph, or None."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def _walk(layer):
    """The sub-layers of ``layer``, depth first, each functional model's in topological order."""
    children = getattr(layer, "layers", None)
    if children is None:
        children = layer._flatten_layers(include_self=False, recursive=False)
    for child in children:
        yield child
        yield from _walk(child)


def _functional_inputs(model) -> list:
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):
        return []


def _reads_an_input(layer, inputs) -> bool:
    try:
        return id(layer.input) in inputs
    except (AttributeError, ValueError):
        return False


def layer_macs(model) -> List[Dict[str, Any]]:
    """One row per ``Conv2D`` / ``Dense`` layer of ``model`` (nested layers included):
    ``{"name", "kind", "macs", "reads_input"}`` with the multiply-accumulates per
    example; ``reads_input``: the layer is applied to the model's input (its input
    gradient is not needed in training).

    A convolution must have been called in a functional graph (its output
    shape is read from there). A dense layer that was not (e.g. inside a
    custom layer) is taken to see a ``(batch, features)`` input.
    """
    import keras

    layers = list(_walk(model))
    inputs = {id(t) for m in [model, *layers] if isinstance(m, keras.Model) and _functional_inputs(m)
              for t in _functional_inputs(m)}
    rows = []
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = _output_shape(layer)
            if shape is None:
                raise ValueError(f"{layer.name}: a Conv2D outside a functional graph; its output size is unknown")
            kh, kw, cin_per_group, filters = layer.kernel.shape
            macs = int(shape[1]) * int(shape[2]) * int(filters) * int(kh) * int(kw) * int(cin_per_group)
            rows.append({"name": layer.name, "kind": "conv2d", "macs": macs,
                         "reads_input": _reads_an_input(layer, inputs)})
        elif isinstance(layer, keras.layers.Dense):
            shape = _output_shape(layer)
            positions = 1
            if shape is not None:
                for d in shape[1:-1]:
                    positions *= int(d)
            fan_in, units = layer.kernel.shape
            rows.append({"name": layer.name, "kind": "dense", "macs": positions * int(fan_in) * int(units),
                         "reads_input": _reads_an_input(layer, inputs)})
    return rows


def forward_flops(model) -> int:
    """FLOPs of one forward pass per example: 2 x MACs."""
    return 2 * sum(r["macs"] for r in layer_macs(model))


def training_flops(model) -> Dict[str, Any]:
    """FLOPs of one training step per example (:data:`COUNTING_RULE`), with the forward
    count, the plain ``3 x forward`` convention and the rule."""
    rows = layer_macs(model)
    forward = 2 * sum(r["macs"] for r in rows)
    image_grad = 2 * sum(r["macs"] for r in rows if r["reads_input"])
    return {"forward_per_example": forward, "training_per_example": 3 * forward - image_grad,
            "three_x_forward_per_example": 3 * forward, "image_gradient_not_computed": image_grad,
            "layers": len(rows), "rule": COUNTING_RULE}


# --------------------------------------------------------------------------
# The CPU's peak
# --------------------------------------------------------------------------
def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    out: Dict[str, str] = {}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if out:
                    break
                continue
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


#: AMX: bfloat16 operations (a multiply-accumulate counting two) per cycle per core of the tile unit (Intel,
#: Sapphire Rapids)
AMX_BF16_PER_CYCLE = 1024


def cpu_peak(ghz: Optional[float] = None, fma_bits: Optional[int] = None) -> Dict[str, Any]:
    """The float32 and bfloat16 peak FLOP/s of the usable cores, and how they were derived.

    * cores: the CPUs this process may run on (``os.sched_getaffinity``);
    * clock: ``cpu MHz`` of /proc/cpuinfo (under a hypervisor the nominal
      clock; a core boosting above it makes the true peak higher), or ``ghz``;
    * FMA datapath bits per cycle per core (``fma_bits`` overrides): AMD Zen 2-4
      (family 23 and 25) have two 256-bit FMA pipes, 512 bits per cycle, and run
      an AVX-512 instruction as two 256-bit halves; Zen 5 (family 26) two
      512-bit pipes, 1024. Otherwise: 2 FMA units of the widest vector width
      the flags show (avx512f 512, avx2 256, else 128), as on Intel server
      cores with two AVX-512 units (an assumption; pass ``fma_bits``);
    * float32 FLOPs per cycle = fma_bits / 32 lanes x 2;
    * bfloat16 (flag ``avx512_bf16``: ``VDPBF16PS`` multiplies two bfloat16
      pairs per float32 lane and accumulates both): twice the float32 rate;
      without the flag, bfloat16 is computed in float32 and its peak is the
      float32 one;
    * the AMX tile peak (flag ``amx_bf16``), apart: Intel gives its tile unit
      1,024 bfloat16 operations (and 2,048 int8 ones) per cycle per core, a
      multiply-accumulate counting two, on Sapphire Rapids; oneDNN reaches it
      only in the matrix products and convolutions it runs on tiles.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    clock = ghz if ghz is not None else float(info.get("cpu MHz", "0") or 0) / 1000.0
    vendor, family = info.get("vendor_id", ""), int(info.get("cpu family", "0") or 0)
    if fma_bits is not None:
        source = "given"
    elif vendor == "AuthenticAMD" and family in (23, 25):
        fma_bits, source = 512, "AMD Zen 2-4: 2 FMA pipes x 256 bits"
    elif vendor == "AuthenticAMD" and family == 26:
        fma_bits, source = 1024, "AMD Zen 5: 2 FMA pipes x 512 bits"
    else:
        width = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
        fma_bits, source = 2 * width, f"assumed 2 FMA units x {width} bits"
    fp32_per_cycle = fma_bits // 32 * 2
    bf16_factor = 2 if "avx512_bf16" in flags else 1
    fp32 = cores * clock * 1e9 * fp32_per_cycle
    return {
        "cpu_model": info.get("model name", "unknown"), "vendor": vendor, "family": family,
        "cores": cores, "ghz": round(clock, 4), "fma_bits_per_cycle": fma_bits, "fma_source": source,
        "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "fp32_flops_per_cycle_per_core": fp32_per_cycle,
        "bf16_flops_per_cycle_per_core": fp32_per_cycle * bf16_factor,
        "fp32_peak_flops": fp32, "bf16_peak_flops": fp32 * bf16_factor,
        "amx_bf16_flops_per_cycle_per_core": AMX_BF16_PER_CYCLE if "amx_bf16" in flags else None,
        "amx_bf16_peak_flops": cores * clock * 1e9 * AMX_BF16_PER_CYCLE if "amx_bf16" in flags else None,
        "formula": (f"peak = cores x GHz x (FMA bits per cycle / 32 lanes) x 2 FLOPs per FMA = {cores} x "
                    f"{clock:.3f} x ({fma_bits}/32) x 2 = {fp32 / 1e9:.1f} GFLOP/s float32"
                    + (f"; bfloat16 (VDPBF16PS, 2 pairs per float32 lane) x 2 = {2 * fp32 / 1e9:.1f} GFLOP/s"
                       if bf16_factor == 2 else "; no avx512_bf16: bfloat16 peak = float32 peak")
                    + (f"; AMX tiles: {cores} x {clock:.3f} x {AMX_BF16_PER_CYCLE} = "
                       f"{cores * clock * AMX_BF16_PER_CYCLE:.1f} GFLOP/s bfloat16" if "amx_bf16" in flags else "")),
    }


def percent_of_peak(images_per_second: float, flops_per_image: float, peak_flops: float) -> float:
    return 100.0 * images_per_second * flops_per_image / peak_flops


__all__.append("percent_of_peak")
