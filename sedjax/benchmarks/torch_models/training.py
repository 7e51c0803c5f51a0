"""The PyTorch train step and its throughput, shared by the reference models (crnn.py,
desed_crnn.py): Adam with the baseline's settings, clip labels on every output frame with a
Keras-style clipped BCE (the bench's sedjax step: pass 2's frame loss)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """Adam with the baseline's settings (Keras' epsilon)."""
    return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)


def train_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer,
                  frame_probs: Callable[[object], torch.Tensor], bce_eps: float = 1e-7
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """fn(features (B,T,F), labels (B,C)) -> loss: one optimizer step, clip labels on every
    frame of frame_probs(model(features)) (B,T',C)."""
    def step(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        probs = frame_probs(model(features)).clamp(bce_eps, 1.0 - bce_eps)
        targets = labels[:, None, :].expand_as(probs)
        loss = -(targets * torch.log(probs) + (1 - targets) * torch.log1p(-probs)).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def measure_train_throughput(build_model: Callable[..., nn.Module],
                             frame_probs: Callable[[object], torch.Tensor], batch_size: int,
                             steps: int, warmup: int, repeats: int, num_frames: int,
                             n_mels: int, num_classes: int) -> float:
    """Median over `repeats` of train clips/s of build_model(n_mels=, num_classes=) on
    (batch_size, num_frames, n_mels) features, `steps` steps a repeat after max(warmup, 1)
    untimed ones, on all CPU threads."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_model(n_mels=n_mels, num_classes=num_classes)
    step = train_step_fn(model, make_optimizer(model), frame_probs)
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
