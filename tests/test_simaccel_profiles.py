"""Device profiles of the simulated accelerator: built-ins from the specs, checked TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.simaccel.profiles import BUILTIN, get_profile, load_profile_file
from harness.errors import UserError

GOOD = """
name = "my-npu"
description = "a test device"
clock_ghz = "1.5 GHz"
macs_per_cycle = { int8 = 4096, int4 = 8192 }
memory_bandwidth_gbs = "1 TB/s"
on_chip_memory_mb = "64 MiB"
vector_gflops = 500
host_link_gbs = 32
tdp_w = "75 W"
sparsity = "2:4"
max_sparse_speedup = 2
layer_overhead_us = "2 us"
"""


@pytest.mark.parametrize(
    ("name", "dtype", "tops"),
    [
        ("moffett-s30", "int8", 88.5),
        ("moffett-s4", "bf16", 14.7),
        ("a100-sxm", "int8", 624),
        ("h100-sxm", "fp16", 989),
        ("h100-pcie", "int8", 1513),
        ("vsq-5nm", "int4", 1024 * 2 * 1.76e9 / 1e12),
    ],
)
def test_builtin_profiles_reach_their_published_peaks(name, dtype, tops):
    assert 2 * get_profile(name).peak_macs_per_s(dtype) / 1e12 == pytest.approx(tops)


def test_builtin_sparsity_follows_the_hardware():
    assert BUILTIN["moffett-s30"].sparsity == "unstructured"
    assert BUILTIN["moffett-s30"].max_sparse_speedup == 32
    assert BUILTIN["a100-sxm"].sparsity == "2:4" and BUILTIN["a100-sxm"].max_sparse_speedup == 2


def test_unknown_device_is_named():
    with pytest.raises(UserError, match=r"unknown device 'tpu'.*moffett-s30"):
        get_profile("tpu")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def test_a_profile_file_converts_units(tmp_path):
    profile = load_profile_file(write(tmp_path, GOOD))
    assert profile.clock_ghz == 1.5 and profile.memory_bandwidth_gbs == 1000
    assert profile.on_chip_memory_mb == pytest.approx(67.108864)
    assert profile.macs_per_cycle == {"int8": 4096.0, "int4": 8192.0}
    assert profile.layer_overhead_us == 2.0 and profile.efficiency == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("vector_gflops = 500", "vector_gflop = 500"), "unknown key.*vector_gflop"),
        (('tdp_w = "75 W"', ""), r"missing field\(s\) tdp_w"),
        (('clock_ghz = "1.5 GHz"', 'clock_ghz = "1.5 GB/s"'), "unit 'GB/s' is not a GHz unit"),
        (("host_link_gbs = 32", "host_link_gbs = -32"), "host_link_gbs must be positive"),
        (("host_link_gbs = 32", 'host_link_gbs = "fast"'), "must be a number"),
        (("int8 = 4096", "int9 = 4096"), "unknown dtype.*int9"),
        (('sparsity = "2:4"', 'sparsity = "4:8"'), "sparsity must be one of"),
        (("max_sparse_speedup = 2", "efficiency = 1.5"), "fraction of peak"),
        (('name = "my-npu"', "name = ["), "not valid TOML"),
    ],
)
def test_bad_profile_files_say_what_is_wrong(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(UserError, match=message) as info:
        load_profile_file(path)
    assert str(path) in str(info.value)
