"""The baseline CRNN in PyTorch: the speed reference of sedjax.bench (never used for training)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Sequence

import torch
from torch import nn


class TorchCRNN(nn.Module):
    """(B, T, F) log-mel -> (B, T, C) frame probabilities; the layers of sedjax's CRNN."""

    def __init__(self, n_mels: int = 64, num_classes: int = 10,
                 conv_features: Sequence[int] = (64, 64, 64), pool: int = 4,
                 dropout: float = 0.3, gru_units: int = 64):
        super().__init__()
        blocks, cin, freq = [], 1, n_mels
        for cout in conv_features:
            # Keras' BatchNorm momentum 0.99 is PyTorch's 0.01
            blocks += [nn.Conv2d(cin, cout, 3, padding=1),
                       nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU(),
                       nn.MaxPool2d((1, pool)), nn.Dropout(dropout)]
            cin, freq = cout, freq // pool
        self.conv = nn.Sequential(*blocks)
        self.gru_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(cin * freq, gru_units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * gru_units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        x = self.conv(x[:, None])  # (B, C, T, F / 64)
        x = x.permute(0, 2, 1, 3).reshape(b, t, -1)  # (B, T, 64)
        x, _ = self.gru(self.gru_dropout(x))
        return torch.sigmoid(self.dense(x))


def build_model(**kwargs) -> TorchCRNN:
    """The baseline CRNN (pass-2 frame outputs); kwargs override TorchCRNN's defaults."""
    return TorchCRNN(**kwargs)


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """Adam with the baseline's settings (Keras' epsilon)."""
    return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)


def train_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer, bce_eps: float = 1e-7
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """fn(features (B,T,F), labels (B,C)) -> loss: one Adam step, clip labels on every frame."""
    def step(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        probs = model(features).clamp(bce_eps, 1.0 - bce_eps)  # Keras-style clipped BCE
        targets = labels[:, None, :].expand_as(probs)
        loss = -(targets * torch.log(probs) + (1 - targets) * torch.log1p(-probs)).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def measure_train_throughput(batch_size: int, steps: int, warmup: int, repeats: int = 3,
                             num_frames: int = 500, n_mels: int = 64, num_classes: int = 10
                             ) -> float:
    """Median over `repeats` of train clips/s at pass-2 shapes, on all CPU threads."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_model(n_mels=n_mels, num_classes=num_classes)
    step = train_step_fn(model, make_optimizer(model))
    features = torch.randn(batch_size, num_frames, n_mels)
    labels = (torch.rand(batch_size, num_classes) < 0.3).float()
    for _ in range(max(warmup, 1)):
        step(features, labels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(features, labels)
        loss.item()  # CPU ops are synchronous; kept as the analogue of block_until_ready
        times.append(time.perf_counter() - start)
    return batch_size * steps / statistics.median(times)
