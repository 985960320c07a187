"""UNet and SLNet of the stroke-lesion paper (rust/imhost-models/src/slnet.rs) defined again in
PyTorch: Switchable Normalization as in its authors' reference code (Luo et al. 2018), SE
blocks (Hu et al. 2018) with reduction 1 after each encoder block.

Prints the parameter counts next to Table 3 (UNet 31.04 M, SLNet 33.84 M) and writes every
state_dict name and shape to tests/fixtures/slnet/state_dict.json, which the Rust test
`slnet::tests` compares with its own VarStore.

    python3 benches/slnet_params.py       # needs torch (a full PyTorch install)
"""
import json

import torch
from torch import nn


class SwitchNorm2d(nn.Module):
    def __init__(self, c, eps=1e-5, momentum=0.997):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(1, c, 1))
        self.register_buffer("running_var", torch.zeros(1, c, 1))
        self.eps, self.momentum = eps, momentum

    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, -1)
        mean_in = x.mean(-1, keepdim=True)
        var_in = x.var(-1, keepdim=True)
        mean_ln = mean_in.mean(1, keepdim=True)
        temp = var_in + mean_in ** 2
        var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
            with torch.no_grad():
                self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean_bn)
                self.running_var.mul_(self.momentum).add_((1 - self.momentum) * var_bn)
        else:
            mean_bn, var_bn = self.running_mean, self.running_var
        mw, vw = torch.softmax(self.mean_weight, 0), torch.softmax(self.var_weight, 0)
        mean = mw[0] * mean_in + mw[1] * mean_ln + mw[2] * mean_bn
        var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
        x = (x - mean) / (var + self.eps).sqrt()
        return x.view(n, c, h, w) * self.weight + self.bias


def norm(c, kind):
    return SwitchNorm2d(c) if kind == "switchable" else nn.BatchNorm2d(c)


class DoubleConv(nn.Module):
    def __init__(self, i, o, kind):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, padding=1, bias=False)
        self.norm1 = norm(o, kind)
        self.conv2 = nn.Conv2d(o, o, 3, padding=1, bias=False)
        self.norm2 = norm(o, kind)

    def forward(self, x):
        x = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(x)))


class SE(nn.Module):
    def __init__(self, c, r=1):
        super().__init__()
        self.fc1 = nn.Linear(c, c // r)
        self.fc2 = nn.Linear(c // r, c)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class SegNet(nn.Module):
    def __init__(self, cin=4, classes=2, base=64, kind="batch", se=False, r=1):
        super().__init__()
        w = [base << l for l in range(5)]
        self.enc = nn.ModuleList()
        self.se = nn.ModuleList() if se else None
        c = cin
        for x in w:
            self.enc.append(DoubleConv(c, x, kind))
            if se:
                self.se.append(SE(x, r))
            c = x
        self.up = nn.ModuleList([nn.ConvTranspose2d(2 * x, x, 2, stride=2) for x in reversed(w[:4])])
        self.dec = nn.ModuleList([DoubleConv(2 * x, x, kind) for x in reversed(w[:4])])
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        skips = []
        for l, e in enumerate(self.enc):
            if l > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = e(x)
            if self.se is not None:
                x = self.se[l](x)
            if l < 4:
                skips.append(x)
        for up, dec, s in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([s, up(x)], 1))
        return self.head(x)


def main():
    out = {"torch": torch.__version__}
    nets = {"unet": SegNet(), "slnet": SegNet(kind="switchable", se=True)}
    for name, net in nets.items():
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        sd = {k: list(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        y = net.train()(torch.rand(2, 4, 32, 32))
        assert list(y.shape) == [2, 2, 32, 32]
        print(f"{name}: {trainable:,} trainable parameters ({trainable / 1e6:.2f} M)")
        out[name] = {"trainable_parameters": trainable, "tensors": sd}
    # Switchable Normalization on a fixed input with its initial (equal) mixing weights: the
    # training-mode output, then the inference output after that one update of the averages.
    sn = SwitchNorm2d(2)
    x = (torch.arange(24, dtype=torch.float32).reshape(3, 2, 2, 2) * 0.37) % 2.9
    train_out = sn.train()(x)
    eval_out = sn.eval()(x)
    out["switchnorm"] = {"input": x.flatten().tolist(), "shape": list(x.shape),
                         "train": train_out.detach().flatten().tolist(), "eval": eval_out.detach().flatten().tolist()}
    with open("tests/fixtures/slnet/state_dict.json", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
