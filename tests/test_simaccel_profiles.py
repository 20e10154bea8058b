"""Device profiles of the simulated accelerator: built-ins from the specs, checked TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.simaccel.builtin import BUILTIN
from backends.simaccel.profiles import get_profile, load_profile_file, write_profile_file
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


SUBMITTED = """
[submitted.resnet50]
precision = { value = "int8", source = "published: a test submission" }
density = 0.5
pattern = "2:4"
offline_batch = 256
"""


def test_a_profile_file_carries_its_submitted_configuration(tmp_path):
    profile = load_profile_file(write(tmp_path, GOOD + SUBMITTED))
    submission = profile.submission("resnet50")
    assert submission.precision.value == "int8" and submission.precision.kind == "published"
    assert submission.density.value == 0.5 and submission.density.kind == "assumed"
    assert profile.submission("bert").facts() == {}
    again = tmp_path / "s30.toml"
    write_profile_file(BUILTIN["moffett-s30"], again)
    assert load_profile_file(again) == BUILTIN["moffett-s30"]  # sources and all


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('value = "int8"', 'value = "fp16"'), r"submitted\.resnet50\.precision: .*no fp16"),
        (("density = 0.5", "density = 0.25"), r"submitted\.resnet50\.density 0\.25 is below"),
        (('pattern = "2:4"', 'pattern = "unstructured"'), r"submitted\.resnet50\.pattern"),
        (("density = 0.5", "density = -1"), r"submitted\.resnet50\.density must be in"),
        (("offline_batch = 256", "offline_batch = 0"), r"submitted\.resnet50\.offline_batch"),
        (("offline_batch = 256", "batch = 256"), r"submitted\.resnet50: unknown key\(s\) batch"),
    ],
)
def test_a_submitted_configuration_the_device_cannot_run_is_refused(tmp_path, change, message):
    path = write(tmp_path, GOOD + SUBMITTED.replace(*change))
    with pytest.raises(UserError, match=message) as info:
        load_profile_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_every_builtin_submission_is_one_its_device_can_run():
    for profile in BUILTIN.values():
        profile.check_submitted(f"{profile.name} ")
        for submission in profile.submitted.values():
            for fact in submission.facts().values():
                assert fact.source.startswith(("published: ", "assumed"))
    assert BUILTIN["moffett-s40"].peak_macs_per_s("int8") == pytest.approx(
        4 / 3 * BUILTIN["moffett-s30"].peak_macs_per_s("int8")
    )
    assert BUILTIN["h200-sxm"].memory_bandwidth_gbs == 4800
