"""PyTorch's forward pass over the CIFAR-10 training images `scache-bench extract` used: images/s and errors; one JSON line.

The akamaster CIFAR ResNet (option-A shortcuts), as in its source, loaded from the same `.th` checkpoint. The timed loop is
the plain pass the benchmark times on its side: bytes → float, normalise, forward, softmax, copy out. Never run by tests.
Arguments: batches_dir images batch depth threads weights mean(3, comma) std(3, comma).
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, inputs, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or inputs != planes else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, depth):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inputs = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(Block(inputs, planes, stride if i == 0 else 1))
                inputs = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)
        return self.linear(out)


def main(argv):
    folder, images, batch, depth, threads, weights = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
    mean = torch.tensor([float(v) for v in argv[6].split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in argv[7].split(",")]).view(1, 3, 1, 1)
    torch.set_num_threads(threads)
    records = np.concatenate([np.fromfile(os.path.join(folder, f"data_batch_{i}.bin"), dtype=np.uint8).reshape(-1, 3073) for i in range(1, 6)])[:images]
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    pixels = torch.from_numpy(np.ascontiguousarray(records[:, 1:])).view(-1, 3, 32, 32)

    model = ResNet(depth)
    state = torch.load(weights, map_location="cpu")
    state = state.get("state_dict", state)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    model.eval()

    probabilities = torch.empty(images, 10)
    with torch.no_grad():
        model((pixels[:batch].float() / 255 - mean) / std)  # warm-up batch
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, images, batch):
            x = (pixels[start:start + batch].float() / 255 - mean) / std
            probabilities[start:start + batch].copy_(F.softmax(model(x), 1))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    errors = int((probabilities.argmax(1) != labels).sum())
    print(json.dumps({"torch": torch.__version__, "seconds": wall, "cpuSeconds": cpu, "imagesPerSecond": images / wall,
                      "errors": errors, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main(sys.argv[1:])
