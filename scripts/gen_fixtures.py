#!/usr/bin/env python3
"""Writes the PyTorch fixtures the Rust tests compare against.

    python scripts/gen_fixtures.py      # needs torch==2.15.0, numpy, safetensors

One file per dtype, conv2d/tests/fixtures/{f32,f64,f16,bf16,c64,c128}.safetensors. Metadata
key "cases" holds a JSON list of case dicts (op, shapes, options); tensors of case i are
"{i}.input", "{i}.weight", "{i}.bias" (if any), "{i}.output", "{i}.grad_output",
"{i}.grad_input", "{i}.grad_weight", "{i}.grad_bias" (if any). Complex tensors are stored
as view_as_real (a trailing dimension of 2). Gradients come from PyTorch's autograd.
Deterministic: every file reseeds torch and random.
"""
import json
import os
import random

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "conv2d", "tests", "fixtures")

DTYPES = {
    "f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
    "bf16": torch.bfloat16, "c64": torch.complex64, "c128": torch.complex128,
}
# How many random cases each file adds to the named ones.
RANDOM_CASES = {"f32": 70, "f64": 40, "f16": 25, "bf16": 25, "c64": 30, "c128": 30}


def conv(name, x, w, cout=None, bias=True, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
         groups=1, mode="zeros"):
    """A conv2d case: x = input shape, w = (cout, cin/groups, kh, kw)."""
    return dict(name=name, op="conv2d", input_shape=list(x), weight_shape=list(w), bias=bias,
                stride=list(stride), padding=padding if isinstance(padding, str) else list(padding),
                dilation=list(dilation), groups=groups, padding_mode=mode,
                output_padding=[0, 0], output_size=None)


def tconv(name, x, w, bias=True, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
          dilation=(1, 1), groups=1, output_size=None):
    """A conv_transpose2d case: w = (cin, cout/groups, kh, kw)."""
    return dict(name=name, op="conv_transpose2d", input_shape=list(x), weight_shape=list(w),
                bias=bias, stride=list(stride), padding=list(padding), dilation=list(dilation),
                groups=groups, padding_mode="zeros", output_padding=list(output_padding),
                output_size=output_size)


def named_cases():
    c = []
    # Shapes and sizes.
    c.append(conv("kernel_equals_input", (2, 3, 5, 5), (4, 3, 5, 5)))
    c.append(conv("output_one_row", (1, 3, 3, 9), (2, 3, 3, 2)))
    c.append(conv("odd_channels_3_to_5", (2, 3, 15, 17), (5, 3, 3, 3), padding=(1, 1)))
    c.append(conv("odd_channels_17_to_33", (1, 17, 17, 15), (33, 17, 3, 3), padding=(1, 1)))
    c.append(conv("odd_channels_33_to_17", (1, 33, 9, 11), (17, 33, 1, 1)))
    c.append(conv("size_31_33", (1, 3, 31, 33), (4, 3, 3, 3), stride=(2, 2), padding=(1, 1)))
    c.append(conv("non_square_kernel_3x5", (2, 4, 12, 14), (6, 4, 3, 5), stride=(2, 1), padding=(4, 2)))
    c.append(conv("kernel_1x7", (1, 2, 9, 13), (3, 2, 1, 7), padding=(0, 3)))
    c.append(conv("kernel_7x1_no_bias", (1, 2, 13, 9), (3, 2, 7, 1), bias=False, padding=(3, 0)))
    c.append(conv("stride_3", (1, 3, 17, 17), (4, 3, 3, 3), stride=(3, 3)))
    c.append(conv("stride_2_1_pad_4_2_dil_3_1", (2, 4, 20, 18), (5, 4, 3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1)))
    c.append(conv("dilation_2", (1, 3, 15, 15), (4, 3, 3, 3), dilation=(2, 2), padding=(2, 2)))
    c.append(conv("dilation_3", (1, 3, 17, 16), (4, 3, 3, 3), dilation=(3, 3)))
    c.append(conv("pointwise_1x1", (2, 8, 7, 9), (5, 8, 1, 1)))
    c.append(conv("pointwise_1x1_stride_2", (2, 8, 9, 9), (5, 8, 1, 1), stride=(2, 2)))
    c.append(conv("groups_2", (2, 6, 10, 10), (4, 3, 3, 3), groups=2, padding=(1, 1)))
    c.append(conv("groups_4", (1, 8, 9, 9), (8, 2, 3, 3), groups=4))
    c.append(conv("depthwise_x1", (2, 5, 11, 11), (5, 1, 3, 3), groups=5, padding=(1, 1)))
    c.append(conv("depthwise_x2", (1, 6, 10, 12), (12, 1, 3, 3), groups=6, padding=(1, 1)))
    c.append(conv("depthwise_x3_stride_2", (1, 4, 15, 15), (12, 1, 3, 3), groups=4, stride=(2, 2), padding=(1, 1)))
    # 'same' and 'valid'.
    c.append(conv("same_odd_kernel", (1, 3, 9, 10), (4, 3, 3, 3), padding="same"))
    c.append(conv("same_even_kernel_2x2", (1, 3, 8, 9), (4, 3, 2, 2), padding="same"))
    c.append(conv("same_even_kernel_4x4", (2, 2, 9, 9), (3, 2, 4, 4), padding="same"))
    c.append(conv("same_kernel_2x3", (1, 3, 7, 8), (2, 3, 2, 3), padding="same"))
    c.append(conv("same_dilation_2", (1, 3, 11, 11), (4, 3, 3, 3), padding="same", dilation=(2, 2)))
    c.append(conv("same_even_kernel_dilation_3", (1, 2, 12, 13), (3, 2, 4, 2), padding="same", dilation=(3, 3)))
    c.append(conv("same_dilation_2_1_even", (1, 2, 10, 10), (3, 2, 2, 4), padding="same", dilation=(2, 1)))
    c.append(conv("same_groups", (1, 4, 8, 8), (8, 2, 2, 2), padding="same", groups=2))
    c.append(conv("valid", (1, 3, 8, 9), (4, 3, 3, 2), padding="valid"))
    # Padding modes.
    for mode in ("reflect", "replicate", "circular"):
        c.append(conv(f"{mode}_symmetric", (2, 3, 8, 9), (4, 3, 3, 3), padding=(1, 1), mode=mode))
        c.append(conv(f"{mode}_asymmetric", (1, 3, 9, 8), (4, 3, 3, 3), padding=(2, 1), mode=mode))
        c.append(conv(f"{mode}_same_odd", (1, 2, 7, 7), (3, 2, 3, 3), padding="same", mode=mode))
        c.append(conv(f"{mode}_same_even", (1, 2, 7, 8), (3, 2, 4, 2), padding="same", mode=mode))
        c.append(conv(f"{mode}_stride_2_groups_2", (1, 4, 9, 9), (6, 2, 3, 3), padding=(1, 2), stride=(2, 2), groups=2, mode=mode))
        c.append(conv(f"{mode}_dilation_2", (1, 2, 8, 8), (3, 2, 3, 3), padding=(2, 2), dilation=(2, 2), mode=mode))
        c.append(conv(f"{mode}_unbatched", (3, 7, 6), (4, 3, 3, 3), padding=(1, 2), mode=mode))
    c.append(conv("reflect_largest", (1, 2, 4, 5), (3, 2, 3, 3), padding=(3, 4), mode="reflect"))
    c.append(conv("circular_largest", (1, 2, 4, 5), (3, 2, 3, 3), padding=(4, 5), mode="circular"))
    c.append(conv("replicate_larger_than_input", (1, 2, 3, 3), (3, 2, 3, 3), padding=(5, 4), mode="replicate"))
    # Unbatched and empty batch.
    c.append(conv("unbatched", (3, 9, 8), (4, 3, 3, 3), padding=(1, 1)))
    c.append(conv("empty_batch", (0, 3, 8, 8), (4, 3, 3, 3), padding=(1, 1)))
    # conv_transpose2d.
    c.append(tconv("t_stride_1", (2, 4, 7, 8), (4, 3, 3, 3)))
    c.append(tconv("t_stride_2", (1, 4, 6, 7), (4, 3, 3, 3), stride=(2, 2)))
    c.append(tconv("t_stride_3", (1, 3, 5, 5), (3, 2, 4, 4), stride=(3, 3), padding=(1, 1)))
    c.append(tconv("t_stride_2_1_pad_4_2", (2, 4, 9, 8), (4, 5, 3, 5), stride=(2, 1), padding=(4, 2)))
    c.append(tconv("t_output_padding_1", (1, 4, 5, 6), (4, 3, 3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1)))
    c.append(tconv("t_output_padding_below_dilation", (1, 3, 5, 5), (3, 2, 3, 3), dilation=(2, 2), output_padding=(1, 1)))
    c.append(tconv("t_groups_2", (1, 6, 6, 6), (6, 2, 3, 3), groups=2, stride=(2, 2)))
    c.append(tconv("t_depthwise_x1", (2, 5, 7, 7), (5, 1, 3, 3), groups=5, padding=(1, 1)))
    c.append(tconv("t_depthwise_x2", (1, 4, 6, 6), (4, 2, 3, 3), groups=4, stride=(2, 2), padding=(1, 1)))
    c.append(tconv("t_dilation_2", (1, 3, 6, 6), (3, 4, 3, 3), dilation=(2, 2), padding=(1, 1)))
    c.append(tconv("t_unet_2x2_s2", (1, 8, 8, 8), (8, 4, 2, 2), stride=(2, 2)))
    c.append(tconv("t_dcgan_4x4_s2_p1", (2, 6, 5, 5), (6, 3, 4, 4), stride=(2, 2), padding=(1, 1), bias=False))
    c.append(tconv("t_output_size_12", (1, 16, 6, 6), (16, 16, 3, 3), stride=(2, 2), padding=(1, 1), output_size=[12, 12]))
    c.append(tconv("t_output_size_11", (1, 4, 6, 6), (4, 4, 3, 3), stride=(2, 2), padding=(1, 1), output_size=[11, 12]))
    c.append(tconv("t_output_size_4_numbers", (2, 4, 5, 5), (4, 2, 3, 3), stride=(3, 2), output_size=[2, 2, 17, 12]))
    c.append(tconv("t_unbatched", (4, 5, 6), (4, 3, 3, 3), stride=(2, 2)))
    c.append(tconv("t_unbatched_output_size_3_numbers", (4, 5, 6), (4, 3, 3, 3), stride=(2, 2), output_size=[3, 12, 14]))
    c.append(tconv("t_empty_batch", (0, 4, 5, 5), (4, 3, 3, 3), stride=(2, 2)))
    c.append(tconv("t_odd_channels", (1, 17, 5, 7), (17, 5, 3, 3), stride=(2, 2), padding=(1, 0)))
    return c


def random_case(rng, i):
    while True:
        n = rng.choice([0, 1, 1, 2, 2, 3])
        groups = rng.choice([1, 1, 1, 2, 3])
        cin = groups * rng.randint(1, 4)
        cout = groups * rng.randint(1, 4)
        kh, kw = rng.randint(1, 5), rng.randint(1, 5)
        stride = [rng.randint(1, 3), rng.randint(1, 3)]
        dilation = [rng.randint(1, 3), rng.randint(1, 3)]
        h, w = rng.randint(1, 17), rng.randint(1, 17)
        bias = rng.random() < 0.7
        if rng.random() < 0.3:
            op_pad = [rng.randrange(max(stride[0], dilation[0])), rng.randrange(max(stride[1], dilation[1]))]
            case = tconv(f"random_t_{i}", (n, cin, h, w), (cin, cout // groups, kh, kw), bias=bias,
                         stride=stride, padding=[rng.randint(0, 3), rng.randint(0, 3)],
                         output_padding=op_pad, dilation=dilation, groups=groups)
        else:
            mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
            padding = [rng.randint(0, 3), rng.randint(0, 3)]
            if rng.random() < 0.15:
                padding, stride = "same", [1, 1]
            case = conv(f"random_{i}", (n, cin, h, w), (cout, cin // groups, kh, kw), bias=bias,
                        stride=stride, padding=padding, dilation=dilation, groups=groups, mode=mode)
        try:
            out = run_case(case, torch.float64, check_only=True)
        except (RuntimeError, ValueError):
            continue
        if out.numel() > 0 or n == 0:
            return case


def run_case(case, dtype, check_only=False):
    """Runs one case in PyTorch; returns the output, or (tensors dict) when generating."""
    x = torch.randn(case["input_shape"], dtype=torch.float64).to(dtype)
    w = torch.randn(case["weight_shape"], dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        x = torch.randn(case["input_shape"], dtype=dtype)
        w = torch.randn(case["weight_shape"], dtype=dtype)
    x.requires_grad_(True)
    ks = case["weight_shape"][2:]
    if case["op"] == "conv2d":
        cout = case["weight_shape"][0]
        cin = case["weight_shape"][1] * case["groups"]
        m = torch.nn.Conv2d(cin, cout, ks, stride=case["stride"],
                            padding=case["padding"] if isinstance(case["padding"], str) else tuple(case["padding"]),
                            dilation=case["dilation"], groups=case["groups"], bias=case["bias"],
                            padding_mode=case["padding_mode"], dtype=dtype)
    else:
        cin = case["weight_shape"][0]
        cout = case["weight_shape"][1] * case["groups"]
        m = torch.nn.ConvTranspose2d(cin, cout, ks, stride=case["stride"], padding=case["padding"],
                                     output_padding=case["output_padding"], groups=case["groups"],
                                     bias=case["bias"], dilation=case["dilation"], dtype=dtype)
    with torch.no_grad():
        m.weight.copy_(w)
        if case["bias"]:
            b = torch.randn(cout, dtype=torch.float64).to(dtype) if not dtype.is_complex \
                else torch.randn(cout, dtype=dtype)
            m.bias.copy_(b)
    if case["op"] == "conv2d" and case["padding_mode"] == "zeros":
        # The functional form, as a user of F.conv2d calls it.
        out = F.conv2d(x, m.weight, m.bias, case["stride"],
                       case["padding"] if isinstance(case["padding"], str) else tuple(case["padding"]),
                       case["dilation"], case["groups"])
    elif case["op"] == "conv2d":
        out = m(x)
    else:
        out = m(x, output_size=case["output_size"]) if case["output_size"] else m(x)
    if check_only:
        return out
    gy = torch.randn(out.shape, dtype=torch.float64).to(dtype) if not dtype.is_complex \
        else torch.randn(out.shape, dtype=dtype)
    out.backward(gy)
    t = {"input": x.detach(), "weight": m.weight.detach(), "output": out.detach(),
         "grad_output": gy, "grad_input": x.grad, "grad_weight": m.weight.grad}
    if case["bias"]:
        t["bias"] = m.bias.detach()
        t["grad_bias"] = m.bias.grad
    return t


def store(t):
    t = t.contiguous()
    return torch.view_as_real(t).contiguous() if t.is_complex() else t


def main():
    os.makedirs(OUT, exist_ok=True)
    for tag, dtype in DTYPES.items():
        rng = random.Random(f"conv2d-{tag}")
        torch.manual_seed(1234)
        cases = named_cases() + [random_case(rng, i) for i in range(RANDOM_CASES[tag])]
        torch.manual_seed(5678)
        tensors = {}
        kept = []
        for case in cases:
            try:
                result = run_case(case, dtype)
            except RuntimeError as e:
                print(f"{tag}: PyTorch refuses {case['name']}: {e}")
                continue
            i = len(kept)
            kept.append(case)
            for k, v in result.items():
                tensors[f"{i}.{k}"] = store(v)
        meta = {"cases": json.dumps(kept), "torch_version": torch.__version__,
                "generator": "scripts/gen_fixtures.py"}
        path = os.path.join(OUT, f"{tag}.safetensors")
        save_file(tensors, path, metadata=meta)
        ops = {}
        for c in kept:
            ops[c["op"]] = ops.get(c["op"], 0) + 1
        print(f"{tag}: {len(kept)} cases {ops} -> {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
