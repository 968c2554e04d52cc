"""A tiny CNN for tests of the real (torch) path: deterministic weights, milliseconds per batch."""

from __future__ import annotations

import torch


def tiny_cnn(classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, classes),
    )
