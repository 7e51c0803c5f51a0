"""What a bench ran on: backend, devices, library versions, CPU count, the device's peak
memory; and the PyTorch reference models, where torch can be imported."""

from __future__ import annotations

import os

import flax
import jax
import librosa


def torch_version() -> str | None:
    """torch's version, or None when torch cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def torch_model(arch: str):
    """The PyTorch twin of model.arch `arch` (sedjax.benchmarks.torch_models.crnn or
    .desed_crnn: build_model, frame_probs), or None when torch cannot be imported."""
    # torch checked first: the model's module may be cached from before torch was hidden
    if torch_version() is None:
        return None
    try:
        if arch == "desed_crnn":
            from sedjax.benchmarks.torch_models import desed_crnn as model
        else:
            from sedjax.benchmarks.torch_models import crnn as model
    except ImportError:
        return None
    return model


def environment() -> dict:
    """Backend, devices, library versions and CPU count."""
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "local_device_count": jax.local_device_count(),
            "cpu_count": os.cpu_count(), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "versions": {"jax": jax.__version__, "flax": flax.__version__,
                         "torch": torch_version(), "librosa": librosa.__version__}}


def peak_memory() -> dict:
    """The first device's peak and limit bytes (None where the backend keeps no stats)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (some backends raise instead of returning None)
        stats = {}
    return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "bytes_limit": stats.get("bytes_limit")}
