"""README.md and both guides state the same machine requirements, the ones in
labs.deploy.requirements."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labs.deploy import requirements as req

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "instructor-guide.md",
        ROOT / "docs" / "self-paced-guide.md"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_guide_states_the_same_cpu_requirements(path: Path) -> None:
    text = " ".join(path.read_text().split())
    assert re.findall(r"(\d+) GiB (?:of )?RAM", text) and set(
        re.findall(r"(\d+) GiB (?:of )?RAM", text)) == {str(req.CPU_RAM_GIB)}
    assert set(re.findall(r"~(\d+) GB of (?:free )?disk", text)) <= {str(req.CPU_DISK_GB),
                                                                     str(req.GPU_DISK_GB)}
    assert f"~{req.CPU_DISK_GB} GB of" in text


@pytest.mark.parametrize("path", DOCS[:2], ids=lambda p: p.name)
def test_the_gpu_figures_agree_and_name_a_model_for_small_cards(path: Path) -> None:
    text = " ".join(path.read_text().split())
    gpu_memory = set(re.findall(r"(\d+) GB (?:of GPU memory )?or more", text))
    assert gpu_memory == {str(req.GPU_MEMORY_GB)}
    assert req.SMALL_GPU_MODEL in text and "float16" in text

