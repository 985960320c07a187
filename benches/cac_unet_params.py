"""The CAC 3D U-Net (rust/imhost-models/src/cac_unet.rs) defined again in PyTorch.

Prints the trainable parameter count and writes every state_dict name and shape to
tests/fixtures/cac/unet_state_dict.json, which the Rust test `cac_unet::tests` compares with
its own VarStore: the two definitions must agree name for name and shape for shape.

    python benches/cac_unet_params.py            # needs torch (the oracle venv has it)
    python benches/cac_unet_params.py --time      # also time a forward pass (CUDA if present)
"""
import json
import sys
import time

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(cout)
        if cin != cout:
            self.skip = nn.Conv3d(cin, cout, 1)
            self.skip_bn = nn.BatchNorm3d(cout)
        else:
            self.skip = None

    def forward(self, x):
        y = nn.functional.elu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.skip_bn(self.skip(x)) if self.skip is not None else x
        return nn.functional.elu(y + s)


class CacUNet(nn.Module):
    def __init__(self, w=16, levels=4):
        super().__init__()
        self.levels = levels
        cin = 1
        for l in range(levels):
            setattr(self, f"enc{l + 1}", ResBlock(cin, w << l))
            cin = w << l
        for l in reversed(range(levels - 1)):
            setattr(self, f"up{l + 1}", nn.ConvTranspose3d(w << (l + 1), w << l, 2, stride=2))
            setattr(self, f"dec{l + 1}", ResBlock(2 * (w << l), w << l))
        self.head = nn.Conv3d(w, 1, 1)

    def forward(self, x):
        skips = []
        for l in range(self.levels):
            x = getattr(self, f"enc{l + 1}")(x)
            if l + 1 < self.levels:
                skips.append(x)
                x = nn.functional.max_pool3d(x, 2)
        for l in reversed(range(self.levels - 1)):
            u = getattr(self, f"up{l + 1}")(x)
            x = getattr(self, f"dec{l + 1}")(torch.cat([skips[l], u], 1))
        return self.head(x)


def main():
    net = CacUNet()
    count = sum(p.numel() for p in net.parameters() if p.requires_grad)
    print(f"CAC U-Net (16 filters, 4 levels): {count:,} trainable parameters")
    entries = {k: list(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    with open("tests/fixtures/cac/unet_state_dict.json", "w") as f:
        json.dump({"trainable_parameters": count, "torch": torch.__version__, "tensors": entries}, f, indent=1, sort_keys=True)
        f.write("\n")
    if "--time" in sys.argv:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        net = net.to(dev).eval()
        x = torch.rand(1, 1, 48, 80, 80, device=dev)
        with torch.no_grad():
            for _ in range(2):
                net(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                net(x)
            if dev == "cuda":
                torch.cuda.synchronize()
        print(f"forward 1×1×48×80×80 on {dev}: {(time.perf_counter() - t) / 5 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
