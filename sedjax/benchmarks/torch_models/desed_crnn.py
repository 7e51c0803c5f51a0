"""The DESED_task baseline CRNN in PyTorch: the speed reference of sedjax.bench's DESED line.

The layers of sedjax/models/desed_crnn.py (DESED_task's desed_task/nnet/CRNN.py with
default.yaml), shape for shape: 7 blocks conv 3x3 (bias) -> BatchNorm -> GLU (a channel Linear
times sigmoid of the input) -> dropout -> average pooling, a 2-layer bidirectional GRU, dropout,
frame and attention heads. training.py times its train step; never used for training.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

POOL_SIZES = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2))


class GLU(nn.Module):
    """DESED_task's GLU: Linear over the channels of x times sigmoid(x), (B, C, T, F)."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return lin * torch.sigmoid(x)


class TorchDesedCRNN(nn.Module):
    """(B, T, F) log-mel -> (frame probs (B, T', C), clip probs (B, C))."""

    def __init__(self, n_mels: int = 128, num_classes: int = 10,
                 conv_features: Sequence[int] = (16, 32, 64, 128, 128, 128, 128),
                 pool_sizes: Sequence[Sequence[int]] = POOL_SIZES, conv_dropout: float = 0.5,
                 gru_units: int = 128, gru_layers: int = 2, head_dropout: float = 0.5):
        super().__init__()
        blocks, cin, freq = [], 1, n_mels
        for cout, pool in zip(conv_features, pool_sizes):
            # torch BatchNorm2d momentum 0.99 (DESED_task) = flax momentum 0.01
            blocks += [nn.Conv2d(cin, cout, 3, padding=1),
                       nn.BatchNorm2d(cout, eps=1e-3, momentum=0.99), GLU(cout),
                       nn.Dropout(conv_dropout), nn.AvgPool2d(tuple(pool))]
            cin, freq = cout, freq // pool[1]
        self.cnn = nn.Sequential(*blocks)
        self.gru = nn.GRU(cin * freq, gru_units, num_layers=gru_layers, batch_first=True,
                          bidirectional=True)
        self.dropout = nn.Dropout(head_dropout)
        self.dense = nn.Linear(2 * gru_units, num_classes)
        self.attention = nn.Linear(2 * gru_units, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.cnn(x[:, None])  # (B, C, T', F')
        b, c, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        x, _ = self.gru(x)
        x = self.dropout(x)
        strong = torch.sigmoid(self.dense(x))
        weights = torch.softmax(self.attention(x), dim=-1).clamp(1e-7, 1.0)
        weak = (strong * weights).sum(1) / weights.sum(1)
        return strong, weak


def build_model(**kwargs) -> TorchDesedCRNN:
    """DESED_task's baseline CRNN; kwargs override TorchDesedCRNN's defaults."""
    return TorchDesedCRNN(**kwargs)


def frame_probs(output: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The frame probabilities (B, T', C) of the model's (frame, clip) output."""
    return output[0]
