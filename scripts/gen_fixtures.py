#!/usr/bin/env python3
"""Writes the PyTorch fixtures the Rust tests compare against
(conv2d/tests/integration/pytorch_fixtures.rs).

    python scripts/gen_fixtures.py      # needs torch==2.15.0, numpy, safetensors

One file per dtype: conv2d/tests/fixtures/{f32,f64,f16,bf16,c64,c128}.safetensors.

Metadata: "cases" is a JSON list of case dicts
    {"name", "op" ("conv2d" | "conv_transpose2d"), "input_shape" (3 or 4 dims), "weight_shape",
     "bias", "stride", "padding" ([ph, pw] | "same" | "valid"), "dilation", "groups",
     "padding_mode", "output_padding", "output_size" (null | 2, 3 or 4 ints)},
plus "torch_version" and "generator". Tensors of case i (its position in the list):
"{i}.input", "{i}.weight", "{i}.bias" (if bias), "{i}.output", "{i}.grad_output",
"{i}.grad_input", "{i}.grad_weight", "{i}.grad_bias" (if bias). Gradients are PyTorch's
autograd for out.backward(grad_output). Complex tensors are stored as view_as_real (a trailing
dimension of 2, f32 for c64 and f64 for c128); f16 and bf16 are stored as F16 and BF16.

How PyTorch computes each case (the definition of truth):
  * conv2d, padding_mode "zeros": F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    with padding a tuple or the string "same"/"valid";
  * conv2d, other padding modes: nn.Conv2d(..., padding_mode=mode) with the weight and bias
    copied in, so that PyTorch's own module code pads;
  * conv_transpose2d: nn.ConvTranspose2d(...) with the weight and bias copied in, called as
    m(input, output_size=...) when output_size is given, else m(input).
Everything is computed in the file's dtype on the CPU, one thread.

Each file holds the named edge cases (all of them in f32 and f64, the ones marked `sub` in the
others) and a random sweep. Deterministic: the sweep uses random.Random seeded per file, and
torch.manual_seed is called at the start of each file before any data is drawn.
"""
import json
import os
import random
import struct
import warnings

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "conv2d", "tests", "fixtures")

DTYPES = {
    "f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
    "bf16": torch.bfloat16, "c64": torch.complex64, "c128": torch.complex128,
}
# Cases per file (named cases first, the random sweep fills up to this count).
TOTAL = {"f32": 130, "f64": 90, "f16": 55, "bf16": 55, "c64": 60, "c128": 60}
# Files that hold every named case; the others hold the subset marked `sub`.
ALL_NAMED = ("f32", "f64")
TORCH_SEED = 20261122

# PyTorch's note that an even 'same' kernel pads a copy of the input; expected, not news.
warnings.filterwarnings("ignore", message="Using padding='same'")
REFUSALS = (RuntimeError, ValueError, NotImplementedError, TypeError)


def conv(name, x, w, bias=True, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
         mode="zeros", sub=False):
    """A conv2d case: x = input shape, w = (cout, cin/groups, kh, kw)."""
    case = dict(name=name, op="conv2d", input_shape=list(x), weight_shape=list(w), bias=bias,
                stride=list(stride), padding=padding if isinstance(padding, str) else list(padding),
                dilation=list(dilation), groups=groups, padding_mode=mode,
                output_padding=[0, 0], output_size=None)
    return case, sub


def tconv(name, x, w, bias=True, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
          dilation=(1, 1), groups=1, output_size=None, sub=False):
    """A conv_transpose2d case: w = (cin, cout/groups, kh, kw)."""
    case = dict(name=name, op="conv_transpose2d", input_shape=list(x), weight_shape=list(w),
                bias=bias, stride=list(stride), padding=list(padding), dilation=list(dilation),
                groups=groups, padding_mode="zeros", output_padding=list(output_padding),
                output_size=None if output_size is None else list(output_size))
    return case, sub


def named_cases():
    """(case, in the subset the f16/bf16/c64/c128 files get) for every named edge case."""
    c = []
    # Output sizes, channel counts, spatial sizes, kernel shapes.
    c.append(conv("kernel_equals_input_out_1x1", (2, 3, 5, 5), (4, 3, 5, 5), sub=True))
    c.append(conv("kernel_equals_input_3x7_no_bias", (1, 2, 3, 7), (3, 2, 3, 7), bias=False))
    c.append(conv("output_1_row", (1, 3, 3, 9), (2, 3, 3, 2), sub=True))
    c.append(conv("output_1_col_stride_2_1", (1, 2, 8, 4), (3, 2, 2, 4), stride=(2, 1)))
    c.append(conv("channels_3_to_5_size_15x17", (2, 3, 15, 17), (5, 3, 3, 3), padding=(1, 1), sub=True))
    c.append(conv("channels_17_to_33_size_17x15", (1, 17, 17, 15), (33, 17, 3, 3), padding=(1, 1)))
    c.append(conv("channels_33_to_17_1x1", (1, 33, 9, 11), (17, 33, 1, 1)))
    c.append(conv("size_31x33_stride_2", (1, 3, 31, 33), (4, 3, 3, 3), stride=(2, 2), padding=(1, 1), sub=True))
    c.append(conv("kernel_3x5_stride_2_1_pad_4_2", (2, 4, 12, 14), (6, 4, 3, 5), stride=(2, 1), padding=(4, 2), sub=True))
    c.append(conv("kernel_1x7", (1, 2, 9, 13), (3, 2, 1, 7), padding=(0, 3), sub=True))
    c.append(conv("stride_3", (1, 3, 17, 17), (4, 3, 3, 3), stride=(3, 3)))
    c.append(conv("stride_2_1", (2, 4, 10, 9), (5, 4, 3, 3), stride=(2, 1), padding=(1, 1)))
    c.append(conv("dilation_2", (1, 3, 15, 15), (4, 3, 3, 3), dilation=(2, 2), padding=(2, 2)))
    c.append(conv("dilation_3", (1, 3, 17, 16), (4, 3, 3, 3), dilation=(3, 3)))
    c.append(conv("dilation_3_1_pad_4_2", (1, 2, 15, 9), (3, 2, 3, 3), dilation=(3, 1), padding=(4, 2), sub=True))
    c.append(conv("padding_4_2_beyond_kernel", (1, 3, 7, 6), (2, 3, 3, 3), padding=(4, 2)))
    c.append(conv("pointwise_1x1", (2, 8, 7, 9), (5, 8, 1, 1)))
    c.append(conv("pointwise_1x1_stride_2", (2, 8, 9, 9), (5, 8, 1, 1), stride=(2, 2), sub=True))
    c.append(conv("pointwise_1x1_stride_3_pad_1", (1, 4, 8, 7), (3, 4, 1, 1), stride=(3, 3), padding=(1, 1)))
    c.append(conv("groups_2", (2, 6, 10, 10), (4, 3, 3, 3), groups=2, padding=(1, 1), sub=True))
    c.append(conv("groups_4", (1, 8, 9, 9), (8, 2, 3, 3), groups=4))
    c.append(conv("depthwise_x1", (2, 5, 11, 11), (5, 1, 3, 3), groups=5, padding=(1, 1)))
    c.append(conv("depthwise_x2", (1, 6, 10, 12), (12, 1, 3, 3), groups=6, padding=(1, 1)))
    c.append(conv("depthwise_x3_stride_2", (1, 4, 15, 15), (12, 1, 3, 3), groups=4, stride=(2, 2), padding=(1, 1), sub=True))
    # padding='same' and 'valid'.
    c.append(conv("same_odd_kernel", (1, 3, 9, 10), (4, 3, 3, 3), padding="same"))
    c.append(conv("same_even_kernel_2x2", (1, 3, 8, 9), (4, 3, 2, 2), padding="same", sub=True))
    c.append(conv("same_even_kernel_4x4", (2, 2, 9, 9), (3, 2, 4, 4), padding="same"))
    c.append(conv("same_kernel_2x3", (1, 3, 7, 8), (2, 3, 2, 3), padding="same", sub=True))
    c.append(conv("same_odd_kernel_dil_2", (1, 3, 11, 11), (4, 3, 3, 3), padding="same", dilation=(2, 2)))
    c.append(conv("same_even_kernel_dil_2", (1, 2, 12, 11), (3, 2, 4, 4), padding="same", dilation=(2, 2), sub=True))
    c.append(conv("same_even_kernel_dil_3", (1, 2, 12, 13), (3, 2, 4, 2), padding="same", dilation=(3, 3)))
    c.append(conv("same_even_kernel_dil_2_1", (1, 2, 10, 10), (3, 2, 2, 4), padding="same", dilation=(2, 1)))
    c.append(conv("same_groups_2", (1, 4, 8, 8), (8, 2, 2, 2), padding="same", groups=2))
    c.append(conv("valid", (1, 3, 8, 9), (4, 3, 3, 2), padding="valid"))
    # Padding modes.
    for mode in ("reflect", "replicate", "circular"):
        c.append(conv(f"{mode}_pad_1_1", (2, 3, 8, 9), (4, 3, 3, 3), padding=(1, 1), mode=mode))
        c.append(conv(f"{mode}_pad_2_1_dil_2_1", (1, 3, 9, 8), (4, 3, 3, 3), padding=(2, 1), dilation=(2, 1), mode=mode, sub=True))
        c.append(conv(f"{mode}_same_odd_kernel", (1, 2, 7, 7), (3, 2, 3, 3), padding="same", mode=mode))
        c.append(conv(f"{mode}_same_even_kernel_4x2", (1, 2, 7, 8), (3, 2, 4, 2), padding="same", mode=mode, sub=True))
        c.append(conv(f"{mode}_stride_2_groups_2_pad_1_2", (1, 4, 9, 9), (6, 2, 3, 3), padding=(1, 2), stride=(2, 2), groups=2, mode=mode, sub=mode == "reflect"))
    c.append(conv("reflect_same_even_kernel_dil_2", (1, 2, 9, 10), (3, 2, 2, 4), padding="same", dilation=(2, 2), mode="reflect"))
    c.append(conv("reflect_largest_pad_size_minus_1", (1, 2, 4, 5), (3, 2, 3, 3), padding=(3, 4), mode="reflect", sub=True))
    c.append(conv("circular_largest_pad_size", (1, 2, 4, 5), (3, 2, 3, 3), padding=(4, 5), mode="circular", sub=True))
    c.append(conv("replicate_pad_larger_than_input", (1, 2, 3, 3), (3, 2, 3, 3), padding=(5, 4), mode="replicate", sub=True))
    c.append(conv("reflect_unbatched", (3, 7, 6), (4, 3, 3, 3), padding=(1, 2), mode="reflect", sub=True))
    # Unbatched input and an empty batch.
    c.append(conv("unbatched", (3, 9, 8), (4, 3, 3, 3), padding=(1, 1), sub=True))
    c.append(conv("empty_batch", (0, 3, 8, 8), (4, 3, 3, 3), padding=(1, 1), sub=True))
    # conv_transpose2d.
    c.append(tconv("t_stride_1", (2, 4, 7, 8), (4, 3, 3, 3)))
    c.append(tconv("t_stride_2", (1, 4, 6, 7), (4, 3, 3, 3), stride=(2, 2), sub=True))
    c.append(tconv("t_stride_3_pad_1", (1, 3, 5, 5), (3, 2, 4, 4), stride=(3, 3), padding=(1, 1)))
    c.append(tconv("t_stride_2_1_pad_4_2", (2, 4, 9, 8), (4, 5, 3, 5), stride=(2, 1), padding=(4, 2), sub=True))
    c.append(tconv("t_stride_2_output_padding_1", (1, 4, 5, 6), (4, 3, 3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), sub=True))
    c.append(tconv("t_stride_1_dil_2_output_padding_1", (1, 3, 5, 5), (3, 2, 3, 3), dilation=(2, 2), output_padding=(1, 1), sub=True))
    c.append(tconv("t_stride_3_1_dil_1_2_output_padding_2_1", (1, 3, 4, 6), (3, 2, 2, 3), stride=(3, 1), dilation=(1, 2), output_padding=(2, 1)))
    c.append(tconv("t_groups_2", (1, 6, 6, 6), (6, 2, 3, 3), groups=2, stride=(2, 2), sub=True))
    c.append(tconv("t_depthwise_x1", (2, 5, 7, 7), (5, 1, 3, 3), groups=5, padding=(1, 1), sub=True))
    c.append(tconv("t_depthwise_x2_stride_2", (1, 4, 6, 6), (4, 2, 3, 3), groups=4, stride=(2, 2), padding=(1, 1)))
    c.append(tconv("t_dil_2_pad_1", (1, 3, 6, 6), (3, 4, 3, 3), dilation=(2, 2), padding=(1, 1)))
    c.append(tconv("t_unet_2x2_stride_2", (1, 8, 8, 8), (8, 4, 2, 2), stride=(2, 2), sub=True))
    c.append(tconv("t_dcgan_4x4_stride_2_pad_1_no_bias", (2, 6, 5, 5), (6, 3, 4, 4), stride=(2, 2), padding=(1, 1), bias=False, sub=True))
    c.append(tconv("t_output_size_6_to_12", (1, 16, 6, 6), (16, 8, 3, 3), stride=(2, 2), padding=(1, 1), output_size=[12, 12]))
    c.append(tconv("t_output_size_6_to_11x12", (1, 4, 6, 6), (4, 4, 3, 3), stride=(2, 2), padding=(1, 1), output_size=[11, 12], sub=True))
    c.append(tconv("t_output_size_4_numbers", (2, 4, 5, 5), (4, 2, 3, 3), stride=(3, 2), output_size=[2, 2, 17, 12]))
    c.append(tconv("t_unbatched", (4, 5, 6), (4, 3, 3, 3), stride=(2, 2), sub=True))
    c.append(tconv("t_unbatched_output_size_3_numbers", (4, 5, 6), (4, 3, 3, 3), stride=(2, 2), output_size=[3, 12, 14]))
    c.append(tconv("t_empty_batch", (0, 4, 5, 5), (4, 3, 3, 3), stride=(2, 2), sub=True))
    c.append(tconv("t_channels_17_to_5", (1, 17, 5, 7), (17, 5, 3, 3), stride=(2, 2), padding=(1, 0)))
    c.append(tconv("t_1x1_stride_2_gaps", (1, 3, 4, 5), (3, 2, 1, 1), stride=(2, 2), sub=True))
    return c


def randn(shape, dtype):
    """Standard normal data: drawn in float64 and cast, or drawn complex directly."""
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    return torch.randn(shape, dtype=torch.float64).to(dtype)


def run_case(case, dtype, data=randn):
    """Runs one case in PyTorch (forward and backward) and returns its named tensors."""
    ks = tuple(case["weight_shape"][2:])
    padding = case["padding"] if isinstance(case["padding"], str) else tuple(case["padding"])
    x = data(case["input_shape"], dtype).requires_grad_(True)
    w = data(case["weight_shape"], dtype)
    if case["op"] == "conv2d":
        cout, cin = case["weight_shape"][0], case["weight_shape"][1] * case["groups"]
    else:
        cin, cout = case["weight_shape"][0], case["weight_shape"][1] * case["groups"]
    b = data([cout], dtype) if case["bias"] else None
    if case["op"] == "conv2d" and case["padding_mode"] == "zeros":
        w.requires_grad_(True)
        if b is not None:
            b.requires_grad_(True)
        out = F.conv2d(x, w, b, tuple(case["stride"]), padding, tuple(case["dilation"]),
                       case["groups"])
        weight, bias = w, b
    else:
        if case["op"] == "conv2d":
            m = torch.nn.utils.skip_init(
                torch.nn.Conv2d, cin, cout, ks, stride=tuple(case["stride"]), padding=padding,
                dilation=tuple(case["dilation"]), groups=case["groups"], bias=case["bias"],
                padding_mode=case["padding_mode"], dtype=dtype)
        else:
            m = torch.nn.utils.skip_init(
                torch.nn.ConvTranspose2d, cin, cout, ks, stride=tuple(case["stride"]),
                padding=padding, output_padding=tuple(case["output_padding"]),
                groups=case["groups"], bias=case["bias"], dilation=tuple(case["dilation"]),
                dtype=dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(b)
        if case["op"] == "conv_transpose2d" and case["output_size"] is not None:
            out = m(x, output_size=case["output_size"])
        else:
            out = m(x)
        weight, bias = m.weight, m.bias
    gy = data(list(out.shape), dtype)
    out.backward(gy)

    def grad(t):
        # A leaf that autograd never reached (an empty batch) has a gradient of zeros.
        return t.grad if t.grad is not None else torch.zeros_like(t)

    t = {"input": x.detach(), "weight": weight.detach(), "output": out.detach(),
         "grad_output": gy, "grad_input": grad(x), "grad_weight": grad(weight)}
    if case["bias"]:
        t["bias"] = bias.detach()
        t["grad_bias"] = grad(bias)
    return t


def zeros(shape, dtype):
    return torch.zeros(shape, dtype=dtype)


def refusal(case, dtype):
    """Why PyTorch refuses the case in `dtype` (None if it runs). Draws no random numbers."""
    try:
        run_case(case, dtype, data=zeros)
        return None
    except REFUSALS as e:
        return f"{type(e).__name__}: {e}"


def random_case(rng, i, dtype, tag, notes):
    """A random valid case (resampling whatever PyTorch refuses), output non-empty unless N=0."""
    while True:
        n = rng.choice([0, 1, 1, 1, 2, 2, 2, 3])
        groups = rng.choice([1, 1, 1, 2, 3, 4])
        cin = groups * rng.randint(1, 4)
        cout = groups * rng.randint(1, 4)
        kh, kw = rng.randint(1, 5), rng.randint(1, 5)
        stride = [rng.randint(1, 3), rng.randint(1, 3)]
        dilation = [rng.randint(1, 3), rng.randint(1, 3)]
        padding = [rng.randint(0, 3), rng.randint(0, 3)]
        big = rng.random() < 0.1
        h, w = (rng.randint(1, 33), rng.randint(1, 33)) if big else (rng.randint(1, 17), rng.randint(1, 17))
        bias = rng.random() < 0.7
        if rng.random() < 0.3:
            output_padding = [rng.randrange(max(stride[0], dilation[0])),
                              rng.randrange(max(stride[1], dilation[1]))]
            output_size = None
            if rng.random() < 0.15:
                # Any size PyTorch accepts: the plain size plus 0..stride-1.
                base = [(s - 1) * st - 2 * p + d * (k - 1) + 1
                        for s, st, p, d, k in zip((h, w), stride, padding, dilation, (kh, kw))]
                output_size = [b + rng.randrange(st) for b, st in zip(base, stride)]
                output_padding = [0, 0]
            case, _ = tconv(f"random_t_{i}", (n, cin, h, w), (cin, cout // groups, kh, kw),
                            bias=bias, stride=stride, padding=padding,
                            output_padding=output_padding, dilation=dilation, groups=groups,
                            output_size=output_size)
        else:
            mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
            if rng.random() < 0.15:
                padding, stride = rng.choice(["same", "same", "valid"]), [1, 1]
            case, _ = conv(f"random_{i}", (n, cin, h, w), (cout, cin // groups, kh, kw),
                           bias=bias, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, mode=mode)
        shapes = [case]
        if n == 0:
            # The same configuration with one image must give a non-empty output.
            shapes.append(dict(case, input_shape=[1] + case["input_shape"][1:]))
        ok = True
        for c in shapes:
            if refusal(c, torch.float64) is not None:
                ok = False
                break
            why = refusal(c, dtype)
            if why is not None:
                notes.append(f"{tag}: PyTorch refuses in this dtype only, resampled: "
                             f"{json.dumps(c)}: {why}")
                ok = False
                break
        if not ok:
            continue
        out_shape = run_case(shapes[-1], torch.float64, data=zeros)["output"].shape
        if out_shape.numel() > 0:
            return case


def store(t):
    t = t.detach().contiguous()
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    return t.contiguous().clone()


def fix_metadata_order(path, meta):
    """Rewrites the file's header with its metadata keys in `meta`'s order.

    save_file writes the metadata from a Rust HashMap, whose key order changes from run to
    run; the tensors and everything else are already deterministic. Same keys and values, so
    the header keeps its length and the data offsets stay valid.
    """
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == meta
    fixed = {"__metadata__": meta}
    fixed.update((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(fixed, separators=(",", ":")).encode()
    assert len(text) <= n, "header grew"
    text += b" " * (n - len(text))  # safetensors pads its header with spaces
    with open(path, "wb") as f:
        f.write(raw[:8] + text + raw[8 + n:])


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    notes = []
    total_bytes = 0
    for tag, dtype in DTYPES.items():
        rng = random.Random(f"conv2d-fixtures-{tag}")
        named = [c for c, sub in named_cases() if tag in ALL_NAMED or sub]
        cases = []
        for c in named:
            why = refusal(c, dtype)
            if why is None:
                cases.append(c)
            else:
                notes.append(f"{tag}: skipped named case {c['name']}: {why}")
        cases += [random_case(rng, i, dtype, tag, notes)
                  for i in range(max(TOTAL[tag] - len(cases), 0))]
        # All data of the file comes from this seed, drawn in case order.
        torch.manual_seed(TORCH_SEED)
        tensors = {}
        for i, case in enumerate(cases):
            for k, v in run_case(case, dtype).items():
                tensors[f"{i}.{k}"] = store(v)
        meta = {"cases": json.dumps(cases), "torch_version": torch.__version__,
                "generator": "scripts/gen_fixtures.py"}
        path = os.path.join(OUT, f"{tag}.safetensors")
        save_file(tensors, path, metadata=meta)
        fix_metadata_order(path, meta)
        size = os.path.getsize(path)
        total_bytes += size
        ops = {}
        for c in cases:
            ops[c["op"]] = ops.get(c["op"], 0) + 1
        print(f"{tag}: {len(cases)} cases ({len(named)} named), {ops}, {size} bytes")
    print(f"total: {total_bytes} bytes")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
