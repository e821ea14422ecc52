"""A plain-torch ResNet with torchvision's module names, to check the conversion against.

There is no torchvision on these machines; this re-implements ``torchvision.models.resnet``'s
bottleneck ResNet (v1.5: stride in the 3x3 convolution) with the same attribute names, so a
torchvision state dict loads into it with ``strict=True`` and its feature map is the reference
that the converted ``transformers.ResNetModel`` must reproduce.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    """torchvision's ``ResNet(Bottleneck, depths)``, stem width ``stem``, stage outputs
    ``widths`` (4x the bottleneck width), a ``fc`` head of ``head`` outputs."""

    def __init__(self, depths: list[int], widths: list[int], stem: int = 64,
                 head: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        for i, (depth, cout) in enumerate(zip(depths, widths, strict=True)):
            blocks = [Bottleneck(cin if j == 0 else cout, cout // 4, cout,
                                 2 if i > 0 and j == 0 else 1) for j in range(depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(cin, head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W → the last stage's map B x C x H/32 x W/32 (what ``fc`` pools)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x


def randomised(model: TorchvisionResNet, seed: int = 0) -> TorchvisionResNet:
    """``model`` in eval mode with random BatchNorm statistics too, so a mixed-up running
    mean/var or affine pair in a conversion shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=gen)
            m.bias.data = 0.1 * torch.randn(n, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
            m.running_var.data = 0.5 + torch.rand(n, generator=gen)
            m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=gen)))
    return model.eval()
