"""labs.hardware: the one reader of /proc/cpuinfo, and the three lines made from it."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from labs import hardware
from labs.course import coursedocs
from labs.load import loadgen
from labs.model import calibration

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
vmx flags\t: ept
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm sve
CPU implementer\t: 0x41
"""


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def write(text: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(hardware, "CPUINFO", path)
    return write


def test_the_first_processor_names_the_cpu_and_its_features(cpuinfo) -> None:
    cpuinfo(X86)
    assert hardware.cpu_model() == "AMD EPYC 7763 64-Core Processor"
    assert hardware.cpu_signature() == f"{platform.machine()} avx2 avx512f avx512_bf16"
    assert coursedocs.cpu_description().endswith(
        f"x AMD EPYC 7763 64-Core Processor ({platform.machine()} avx2 avx512f avx512_bf16)")


def test_arm_lists_features_and_no_model_name(cpuinfo) -> None:
    cpuinfo(ARM)
    assert hardware.cpu_model() is None
    assert hardware.cpu_signature() == f"{platform.machine()} asimd sve"
    assert "x unknown CPU (" in coursedocs.cpu_description()


def test_without_cpuinfo_the_machine_is_all_there_is(cpuinfo) -> None:
    cpuinfo(None)
    assert hardware.cpuinfo() is None and hardware.cpu_model() is None
    assert hardware.cpu_signature() == platform.machine()


def test_every_reader_is_the_one_in_labs_hardware() -> None:
    assert loadgen.describe_hardware is hardware.describe_hardware
    assert calibration.cpu_signature is hardware.cpu_signature
