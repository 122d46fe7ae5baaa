#!/usr/bin/env python3
"""Writes a small CNN's state_dict, as PyTorch users save it, plus an input and PyTorch's
output, for the Rust state-dict tests.

    python scripts/gen_state_dict_fixture.py   # needs torch==2.15.0, safetensors

Files: conv2d/tests/fixtures/small_cnn_{f32,f16,bf16}.safetensors, each holding the
model's parameters under their state_dict keys ("features.0.weight", ...) and the tensors
"input" and "output" (the model run in that dtype).
"""
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "conv2d", "tests", "fixtures")


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, padding_mode="reflect", bias=False),
        )
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.features(x))


def main():
    for tag, dtype in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        torch.manual_seed(7)
        model = SmallCnn().to(dtype)
        x = torch.randn(2, 3, 12, 10).to(dtype)
        with torch.no_grad():
            y = model(x)
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        tensors["input"] = x
        tensors["output"] = y
        save_file(tensors, os.path.join(OUT, f"small_cnn_{tag}.safetensors"),
                  metadata={"torch_version": torch.__version__})
        print(tag, sorted(model.state_dict().keys()))


if __name__ == "__main__":
    main()
