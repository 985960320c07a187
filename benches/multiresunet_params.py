"""MultiResUNet (rust/imhost-models/src/multiresunet.rs) defined again in PyTorch, from the
Keras code of the MultiResUNet report (../shared/papers/multiresunet-report.txt: conv_block,
multires_block, res_path, encoder_block, decoder_block, build_multiresunet).

Prints the trainable parameter count and the Keras "Total params" (trainable + the batch
norms' moving mean and variance), and writes every state_dict name and shape to
tests/fixtures/multiresunet/state_dict.json, which the Rust test `multiresunet::tests` compares
with its own VarStore: the two definitions must agree name for name and shape for shape.

    python3 benches/multiresunet_params.py             # needs torch (a full PyTorch install)
    python3 benches/multiresunet_params.py --time-train
        also times one training epoch as `imhost train multiresunet` runs it (base width 8,
        600 images of 96x96 in batches of 8, Adam, BCE on logits, then 80 validation images),
        on 2 CPU threads, to compare with the epoch seconds that command prints
"""
import sys
import time
import json

import torch
from torch import nn

ALPHA = 1.67


def split(num_filters):
    """The report's filter split: int(W*0.167), int(W*0.333), int(W*0.5) with W = n * 1.67."""
    w = num_filters * ALPHA
    return int(w * 0.167), int(w * 0.333), int(w * 0.5)


def bn(c):
    # Keras BatchNormalization: momentum 0.99 (PyTorch 0.01), epsilon 1e-3.
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class ConvBlock(nn.Module):
    """Conv2D (no bias, 'same') -> BatchNormalization -> ReLU when act."""

    def __init__(self, cin, cout, k, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = bn(cout)
        self.act = act

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.act else y


class MultiResBlock(nn.Module):
    def __init__(self, cin, num_filters):
        super().__init__()
        f1, f2, f3 = split(num_filters)
        self.c1 = ConvBlock(cin, f1, 3)
        self.c2 = ConvBlock(f1, f2, 3)
        self.c3 = ConvBlock(f2, f3, 3)
        self.bn = bn(f1 + f2 + f3)
        self.shortcut = ConvBlock(cin, f1 + f2 + f3, 1, act=False)
        self.out_bn = bn(f1 + f2 + f3)
        self.width = f1 + f2 + f3

    def forward(self, x):
        x1 = self.c1(x)
        x2 = self.c2(x1)
        x3 = self.c3(x2)
        xc = self.bn(torch.cat([x1, x2, x3], 1))
        return self.out_bn(torch.relu(xc + self.shortcut(x)))


class ResStep(nn.Module):
    def __init__(self, cin, num_filters):
        super().__init__()
        self.main = ConvBlock(cin, num_filters, 3, act=False)
        self.shortcut = ConvBlock(cin, num_filters, 1, act=False)
        self.bn = bn(num_filters)

    def forward(self, x):
        return self.bn(torch.relu(self.main(x) + self.shortcut(x)))


class Encoder(nn.Module):
    def __init__(self, cin, num_filters, length):
        super().__init__()
        self.mres = MultiResBlock(cin, num_filters)
        steps, c = [], self.mres.width
        for _ in range(length):
            steps.append(ResStep(c, num_filters))
            c = num_filters
        self.res = nn.ModuleList(steps)

    def forward(self, x):
        x = self.mres(x)
        s = x
        for step in self.res:
            s = step(s)
        return s, nn.functional.max_pool2d(x, 2)


class Decoder(nn.Module):
    def __init__(self, cin, skip, num_filters):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, num_filters, 2, stride=2)
        self.mres = MultiResBlock(num_filters + skip, num_filters)

    def forward(self, x, s):
        return self.mres(torch.cat([self.up(x), s], 1))


class MultiResUNet(nn.Module):
    def __init__(self, in_channels=3, base=32):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        c, self.encoders = in_channels, nn.ModuleList()
        for level, w in enumerate(widths):
            e = Encoder(c, w, 4 - level)
            self.encoders.append(e)
            c = e.mres.width
        self.bridge = MultiResBlock(c, 16 * base)
        c = self.bridge.width
        self.decoders = nn.ModuleList()
        for w in reversed(widths):
            d = Decoder(c, w, w)
            self.decoders.append(d)
            c = d.mres.width
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        skips = []
        for e in self.encoders:
            s, x = e(x)
            skips.append(s)
        x = self.bridge(x)
        for d, s in zip(self.decoders, reversed(skips)):
            x = d(x, s)
        return self.head(x)  # logits; the report's sigmoid is applied by the caller


def describe(net):
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    sd = {k: list(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    keras_total = sum(v.numel() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    return trainable, keras_total, sd


def main():
    out = {"torch": torch.__version__}
    for name, (cin, base) in {"report": (3, 32), "small": (3, 8)}.items():
        net = MultiResUNet(cin, base)
        trainable, total, sd = describe(net)
        print(f"MultiResUNet {name} (in {cin}, base {base}): {trainable:,} trainable, {total:,} Keras total params")
        y = net.eval()(torch.rand(1, cin, 64, 48))
        assert list(y.shape) == [1, 1, 64, 48]
        out[name] = {"in_channels": cin, "base_width": base, "trainable_parameters": trainable,
                     "keras_total_parameters": total, "tensors": sd}
    with open("tests/fixtures/multiresunet/state_dict.json", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def time_train(epochs=3):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = MultiResUNet(3, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(600, 3, 96, 96)
    y = (torch.rand(600, 1, 96, 96) > 0.7).float()
    v = torch.rand(80, 3, 96, 96)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        for b in range(0, 600, 8):
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[b:b + 8]), y[b:b + 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for b in range(0, 80, 8):
                net(v[b:b + 8])
        dt = time.perf_counter() - t0
        print(f"PyTorch {torch.__version__} eager, epoch {epoch + 1}: {dt:.1f} s ({600 / dt:.1f} training samples/s incl. validation)")


if __name__ == "__main__":
    if "--time-train" in sys.argv:
        time_train()
    else:
        main()
