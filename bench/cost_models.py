"""Models for the cost model's checks on layer kinds the fixtures lack (deterministic; Fashion-MNIST from Debian's
dataset-fashion-mnist: 12,000 train / 2,000 val / 2,000 test images, 3 epochs of Adam, seed 0, 2 threads, torch's
TorchScript exporter, opset 17):

  act        conv, LeakyReLU, AvgPool, conv, SiLU, AvgPool, conv, LeakyReLU, strided conv, SiLU, mean, Linear
  leaky_avg  conv, LeakyReLU, AvgPool twice, conv, LeakyReLU, mean, Linear (as nu11's H_leaky_avg)
  sig        conv, Sigmoid, MaxPool twice, conv, Sigmoid, mean, Linear
  vit        a tiny ViT: 7x7 patches of 32 dims, 2 blocks of 2-head attention and a GELU MLP, mean, Linear

    python bench/cost_models.py OUT_DIR [act leaky_avg sig vit]    (writes OUT_DIR/fm.npz and OUT_DIR/<name>.onnx)
    python -m eecc compile OUT_DIR/act.onnx --data OUT_DIR/fm.npz --target psoc6 --search --quantize int8 --emulate

BENCHMARKS.md (search pricing of float islands and token tensors) has the figures. About 6 minutes on 2 cores."""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from eecc.examples import datasets  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)
out = sys.argv[1]


def act():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                         nn.Conv2d(16, 24, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
                         nn.Conv2d(24, 32, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.SiLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def leaky_avg():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def sig():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 24, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
                         nn.Conv2d(24, 32, 3, padding=1), nn.Sigmoid(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.n1(x)
        x = x + self.att(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self, d=32, depth=2):
        super().__init__()
        self.patch = nn.Conv2d(1, d, 7, stride=7)
        self.pos = nn.Parameter(torch.zeros(1, 16, d))
        self.blocks = nn.Sequential(*[Block(d, 2) for _ in range(depth)])
        self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.fc(self.norm(self.blocks(x)).mean(1))


data = datasets.load("fashion-mnist")
rng = np.random.default_rng(0)
tr = rng.permutation(len(data["x_train"]))
te = rng.permutation(len(data["x_test"]))[:2000]
d = {"x_train": data["x_train"][tr[:12000]], "y_train": data["y_train"][tr[:12000]],
     "x_val": data["x_train"][tr[12000:14000]], "y_val": data["y_train"][tr[12000:14000]],
     "x_test": data["x_test"][te], "y_test": data["y_test"][te]}
d = {k: (v.astype(np.float32) if k[0] == "x" else v.astype(np.int64)) for k, v in d.items()}
np.savez(f"{out}/fm.npz", **d)
x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"])
for name in sys.argv[2:] or ["act", "leaky_avg", "sig", "vit"]:
    torch.manual_seed(0)
    m = {"act": act, "leaky_avg": leaky_avg, "sig": sig, "vit": ViT}[name]()
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    for ep in range(3):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            F.cross_entropy(m(x[b]), y[b]).backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(torch.from_numpy(d["x_test"])).argmax(1).numpy() == d["y_test"]).mean()
    print(name, "test acc", acc, flush=True)
    torch.onnx.export(m, (x[:1],), f"{out}/{name}.onnx", opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
