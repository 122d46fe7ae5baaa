#!/usr/bin/env python3
"""Writes PyTorch fixtures with NaN, infinities and overflowing values, for
conv2d/tests/integration/pytorch_fixtures.rs (the `special_values_match_pytorch` tests).

    python scripts/gen_special_fixtures.py   # needs torch==2.15.0, numpy, safetensors

Files: conv2d/tests/fixtures/special_{f32,f64,f16,bf16}.safetensors, in the format of
scripts/gen_fixtures.py (whose run_case computes them), with one more key per case:
"specials", {tensor role: [[index, value], ...]}, the values planted into standard normal
data ("nan", "inf", "-inf", or "big" = half the dtype's largest finite value, so that two
terms overflow). Roles: "input", "weight", "bias", "grad_output".

These pin PyTorch's propagation, including what follows from how it computes rather than
from the maths: with zero padding an infinite weight meets the padded zeros, and
0 * inf = NaN at the border.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as g  # noqa: E402

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
          "bf16": torch.bfloat16}
SEED = 20261123


def special(case, **specials):
    case = dict(case)
    case["specials"] = specials
    return case


def cases():
    conv, tconv = g.conv, g.tconv
    c = []
    c.append(special(conv("nan_input_zero_padding", (1, 2, 6, 6), (3, 2, 3, 3), padding=(1, 1))[0],
                     input=[[[0, 0, 2, 3], "nan"]]))
    c.append(special(conv("inf_and_minus_inf_inputs_overlap", (1, 1, 7, 7), (2, 1, 3, 3),
                          padding=(1, 1))[0],
                     input=[[[0, 0, 1, 1], "inf"], [[0, 0, 2, 2], "-inf"]]))
    c.append(special(conv("inf_weight_meets_zero_padding", (1, 2, 5, 5), (2, 2, 3, 3),
                          padding=(1, 1))[0],
                     weight=[[[0, 1, 0, 0], "inf"]]))
    c.append(special(conv("inf_weight_same_even_kernel", (1, 2, 6, 5), (2, 2, 4, 2),
                          padding="same")[0],
                     weight=[[[1, 0, 3, 1], "-inf"]]))
    c.append(special(conv("nan_weight_stride_2_dilation_2", (2, 3, 9, 8), (4, 3, 3, 3),
                          stride=(2, 2), dilation=(2, 2), padding=(2, 1))[0],
                     weight=[[[2, 1, 1, 2], "nan"]]))
    for mode in ("reflect", "replicate", "circular"):
        c.append(special(conv(f"inf_weight_{mode}", (1, 2, 5, 6), (3, 2, 3, 3), padding=(1, 2),
                              mode=mode)[0],
                         weight=[[[1, 0, 2, 2], "inf"]]))
        c.append(special(conv(f"nan_input_{mode}", (1, 2, 5, 6), (3, 2, 3, 3), padding=(2, 1),
                              mode=mode)[0],
                         input=[[[0, 1, 0, 5], "nan"]]))
    c.append(special(conv("nan_bias", (1, 2, 4, 4), (3, 2, 3, 3))[0], bias=[[[1], "nan"]]))
    c.append(special(conv("inf_grad_output", (1, 2, 6, 6), (3, 2, 3, 3), padding=(1, 1))[0],
                     grad_output=[[[0, 1, 2, 2], "inf"], [[0, 2, 5, 0], "-inf"]]))
    c.append(special(conv("nan_input_depthwise", (1, 4, 7, 7), (8, 1, 3, 3), padding=(1, 1),
                          groups=4)[0],
                     input=[[[0, 2, 0, 6], "nan"]]))
    c.append(special(conv("inf_input_pointwise", (1, 8, 5, 5), (16, 8, 1, 1))[0],
                     input=[[[0, 3, 2, 2], "inf"]]))
    c.append(special(conv("inf_weight_dense_zero_padding", (2, 8, 9, 9), (16, 8, 3, 3),
                          padding=(1, 1))[0],
                     weight=[[[5, 7, 2, 0], "inf"]]))
    c.append(special(conv("inf_input_skipped_by_stride", (1, 1, 5, 5), (2, 1, 1, 1),
                          stride=(2, 2))[0],
                     input=[[[0, 0, 1, 1], "inf"]]))
    c.append(special(conv("overflow_to_inf", (1, 1, 4, 4), (1, 1, 2, 2))[0],
                     input=[[[0, 0, 1, 1], "big"], [[0, 0, 1, 2], "big"],
                            [[0, 0, 2, 1], "big"], [[0, 0, 2, 2], "big"]],
                     weight=[[[0, 0, 0, 0], "big"], [[0, 0, 0, 1], "big"],
                             [[0, 0, 1, 0], "big"], [[0, 0, 1, 1], "big"]]))
    c.append(special(tconv("t_inf_input_stride_2", (1, 2, 4, 4), (2, 3, 3, 3), stride=(2, 2))[0],
                     input=[[[0, 1, 1, 2], "inf"]]))
    c.append(special(tconv("t_nan_weight_padding_output_padding", (1, 2, 4, 5), (2, 2, 3, 3),
                           stride=(2, 2), padding=(1, 1), output_padding=(1, 1))[0],
                     weight=[[[1, 1, 0, 2], "nan"]]))
    c.append(special(tconv("t_inf_weight_dilation_2", (1, 3, 4, 4), (3, 2, 3, 3),
                           padding=(2, 2), dilation=(2, 2))[0],
                     weight=[[[0, 1, 1, 1], "-inf"]]))
    c.append(special(tconv("t_inf_grad_output", (1, 2, 3, 3), (2, 2, 3, 3), stride=(2, 2))[0],
                     grad_output=[[[0, 0, 3, 3], "inf"]]))
    # Kernel row 0 reads only padding rows, for every output: NaN in all of channel 1.
    c.append(special(conv("inf_weight_row_meets_only_padding", (1, 2, 2, 9), (4, 2, 3, 3),
                          padding="same", dilation=(2, 2))[0],
                     weight=[[[1, 0, 0, 1], "inf"]]))
    return c


def planted(case, dtype):
    """A data function for g.run_case that plants the case's special values, by role."""
    roles = ["input", "weight"] + (["bias"] if case["bias"] else []) + ["grad_output"]
    calls = iter(roles)
    values = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
              "big": torch.finfo(dtype).max / 2}

    def data(shape, dt):
        t = g.randn(shape, dt)
        for index, value in case["specials"].get(next(calls), []):
            t[tuple(index)] = values[value]
        return t
    return data


def main():
    torch.set_num_threads(1)
    for tag, dtype in DTYPES.items():
        cs = cases()
        torch.manual_seed(SEED)
        tensors = {}
        for i, case in enumerate(cs):
            for k, v in g.run_case(case, dtype, data=planted(case, dtype)).items():
                tensors[f"{i}.{k}"] = g.store(v)
        meta = {"cases": json.dumps(cs), "torch_version": torch.__version__,
                "generator": "scripts/gen_special_fixtures.py"}
        path = os.path.join(g.OUT, f"special_{tag}.safetensors")
        g.save_file(tensors, path, metadata=meta)
        g.fix_metadata_order(path, meta)
        nonfinite = sum(int((~torch.isfinite(v.float())).sum()) for v in tensors.values())
        print(f"{tag}: {len(cs)} cases, {nonfinite} non-finite values, "
              f"{os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
