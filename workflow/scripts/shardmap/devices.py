"""Where a task computes, shared by both arms: the CPU or a CUDA GPU, from a config key
whose value is auto, cpu or cuda. Standard library at import; torch only when asked."""

from __future__ import annotations

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")


# What a GPU driver makes visible without loading anything: NVIDIA's device nodes (also in
# containers given a GPU), WSL's GPU node, and AMD's compute node (ROCm builds of torch
# answer torch.cuda too).
GPU_DEVICE_PATTERNS = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


def gpu_device_files_present():
    """Whether this node shows a GPU driver's device files (a glob over /dev: microseconds,
    where importing torch to ask it costs a second and 180 MB)."""
    import glob

    return any(glob.glob(pattern) for pattern in GPU_DEVICE_PATTERNS)


def cuda_hidden():
    """Whether CUDA_VISIBLE_DEVICES hides every GPU ("" or "-1")."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def cuda_available():
    """Whether torch is installed and sees a CUDA GPU. On a node without a GPU driver's
    device files (or with every GPU hidden) the answer is no without importing torch."""
    if cuda_hidden() or not gpu_device_files_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device, key, tasks):
    """'cpu' or 'cuda' for ``device``, the value of config key ``key`` (auto: cuda when
    torch sees a GPU); ``tasks`` names what runs there, for the message when no GPU is."""
    if device not in DEVICES:
        raise InputError(f"{key} is '{device}'; use one of {', '.join(DEVICES)}.")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise InputError(f"{key} is 'cuda' but torch sees no CUDA GPU on this node; run the {tasks} on a GPU "
                         f"node (with a CUDA build of torch) or set {key} to 'auto' or 'cpu'.")
    return device
