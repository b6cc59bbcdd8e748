"""`device: auto` decides from what a GPU driver shows (device files, CUDA_VISIBLE_DEVICES)
before importing torch: on a node without a GPU it never imports torch (a second and
180 MB per task); with a driver it asks torch. Tested both ways with the check stubbed."""

import subprocess
import sys
import types

import pytest

from shardmap import devices


def fake_torch(sees_gpu):
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: sees_gpu)
    return torch


def test_without_gpu_device_files_auto_is_cpu_and_torch_is_never_imported():
    code = ("import sys; import shardmap.devices as d; d.gpu_device_files_present = lambda: False; "
            "print(d.resolve_device('auto', 'lnm.device', 'mapping tasks'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]


@pytest.mark.parametrize("sees_gpu, expected", [(True, "cuda"), (False, "cpu")])
def test_with_gpu_device_files_torch_decides(monkeypatch, sees_gpu, expected):
    monkeypatch.setattr(devices, "gpu_device_files_present", lambda: True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(sees_gpu))
    assert devices.resolve_device("auto", "lnm.device", "mapping tasks") == expected


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_gpus_hidden_by_cuda_visible_devices_are_not_asked_for(monkeypatch, hidden):
    monkeypatch.setattr(devices, "gpu_device_files_present", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True))
    assert devices.resolve_device("auto", "lnm.device", "mapping tasks") == "cpu"
    with pytest.raises(devices.InputError, match="torch sees no CUDA GPU"):
        devices.resolve_device("cuda", "lnm.device", "mapping tasks")


def test_the_device_file_check_reads_dev(monkeypatch, tmp_path):
    (tmp_path / "nvidia0").touch()
    monkeypatch.setattr(devices, "GPU_DEVICE_PATTERNS", (str(tmp_path / "nvidia[0-9]*"),))
    assert devices.gpu_device_files_present()
    monkeypatch.setattr(devices, "GPU_DEVICE_PATTERNS", (str(tmp_path / "kfd"),))
    assert not devices.gpu_device_files_present()
