"""Where a task computes, shared by both arms: the CPU or a CUDA GPU, from a config key
whose value is auto, cpu or cuda. Standard library at import; torch only when asked."""

from __future__ import annotations

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available():
    """Whether torch is installed and sees a CUDA GPU."""
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
