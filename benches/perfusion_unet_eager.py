"""The perfusion U-Net (perfusion-cnn-gava2023) in PyTorch eager mode, with the same parameter
names as rust/imhost-models/src/unet.rs, loading our `.safetensors` weights.

Used two ways:
  * benchmark: `python3 benches/perfusion_unet_eager.py bench MODEL_DIR [--device cuda] [--dtype bf16]`
    times one study (16 slices of 512x512, T of the model) — the reference our runtime is
    compared with in BENCHMARKS.md;
  * fixtures: `tests/fixtures/models/make_fixtures.py` imports it to write reference outputs.

Needs only torch (and numpy); safetensors are read by hand (8-byte header length, JSON header,
raw little-endian data) so no extra package is needed on the GPU machines.
"""
import json
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = t.clone()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().to(torch.float32)
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, batch_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # Identity (no parameters) keeps the state_dict names of the batch-norm-free network.
        self.bn1 = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class PerfusionUNet(nn.Module):
    """Four encoder stages with average pooling, a bottleneck, four decoder stages, 1x1 head."""

    def __init__(self, time_points, base_width=64, outputs=3, batch_norm=False):
        super().__init__()
        w = [base_width << s for s in range(5)]
        self.enc1 = DoubleConv(time_points, w[0], batch_norm)
        self.enc2 = DoubleConv(w[0], w[1], batch_norm)
        self.enc3 = DoubleConv(w[1], w[2], batch_norm)
        self.enc4 = DoubleConv(w[2], w[3], batch_norm)
        self.bottleneck = DoubleConv(w[3], w[4], batch_norm)
        self.up4 = nn.ConvTranspose2d(w[4], w[3], 2, stride=2)
        self.dec4 = DoubleConv(2 * w[3], w[3], batch_norm)
        self.up3 = nn.ConvTranspose2d(w[3], w[2], 2, stride=2)
        self.dec3 = DoubleConv(2 * w[2], w[2], batch_norm)
        self.up2 = nn.ConvTranspose2d(w[2], w[1], 2, stride=2)
        self.dec2 = DoubleConv(2 * w[1], w[1], batch_norm)
        self.up1 = nn.ConvTranspose2d(w[1], w[0], 2, stride=2)
        self.dec1 = DoubleConv(2 * w[0], w[0], batch_norm)
        self.head = nn.Conv2d(w[0], outputs, 1)

    def forward(self, x):
        s1 = self.enc1(x)
        s2 = self.enc2(F.avg_pool2d(s1, 2))
        s3 = self.enc3(F.avg_pool2d(s2, 2))
        s4 = self.enc4(F.avg_pool2d(s3, 2))
        y = self.bottleneck(F.avg_pool2d(s4, 2))
        y = self.dec4(torch.cat([s4, self.up4(y)], 1))
        y = self.dec3(torch.cat([s3, self.up3(y)], 1))
        y = self.dec2(torch.cat([s2, self.up2(y)], 1))
        y = self.dec1(torch.cat([s1, self.up1(y)], 1))
        return self.head(y)


def load_model_dir(model_dir, device="cpu"):
    manifest = json.load(open(f"{model_dir}/manifest.json"))
    cfg = manifest["architecture"]["config"]
    net = PerfusionUNet(cfg["time_points"], cfg.get("base_width", 64), cfg.get("outputs", 3), cfg.get("batch_norm", False))
    state = read_safetensors(f"{model_dir}/{manifest['weights']['file']}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    # BatchNorm's num_batches_tracked counter is not a weight (unused in eval mode).
    assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected, (missing, unexpected)
    return net.eval().to(device), manifest


def bench(model_dir, device, dtype, slices=16, size=512, repeats=10):
    net, manifest = load_model_dir(model_dir, device)
    t = manifest["inputs"]["time_points"]
    dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    net = net.to(dt)
    x = torch.randn(slices, t, size, size, device=device, dtype=dt)
    with torch.no_grad():
        for _ in range(2):
            net(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            y = net(x).float().cpu()
            times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({"device": device, "dtype": dtype, "slices": slices, "size": size, "time_points": t,
                      "median_s": times[len(times) // 2], "min_s": times[0], "torch": torch.__version__}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "bench":
        args = sys.argv[3:]
        device = args[args.index("--device") + 1] if "--device" in args else "cpu"
        dtype = args[args.index("--dtype") + 1] if "--dtype" in args else "f32"
        size = int(args[args.index("--size") + 1]) if "--size" in args else 512
        repeats = int(args[args.index("--repeats") + 1]) if "--repeats" in args else 10
        bench(sys.argv[2], device, dtype, size=size, repeats=repeats)
    else:
        print(__doc__)
        sys.exit(2)
