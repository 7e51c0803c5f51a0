"""The baseline CRNN in PyTorch: the speed reference of sedjax.bench, whose train step
training.py times (never used for training)."""

from __future__ import annotations

from typing import Sequence

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


def frame_probs(output: torch.Tensor) -> torch.Tensor:
    """The frame probabilities (B, T, C) of the model's output: the output itself."""
    return output
