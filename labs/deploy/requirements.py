"""What a machine needs to run the course: one set of figures, quoted by README.md and both
guides (tests/test_requirements.py keeps them in agreement).

CPU: the server holds a 2 GiB KV pool and ~0.55 GB of float32 weights (~3 GiB with vLLM
itself); the venv with vLLM's CPU build and torch is ~3.5 GB, the model ~0.55 GB.
GPU: Qwen2.5-7B-Instruct's bf16 weights are 15.2 GB, so a 20 GB card (the article's RTX 4000
Ada) is the smallest that leaves room for a KV cache; its download is ~15 GB plus the CUDA venv.
"""

CPU_CORES = 2
CPU_RAM_GIB = 8
CPU_DISK_GB = 6
GPU_MEMORY_GB = 20
GPU_DISK_GB = 20
# A 16 GB card (T4) cannot hold the default's weights with a KV cache beside them; this one,
# ~6.2 GB in 16-bit, fits with room for the cache. T4 (compute capability 7.5) has no bf16:
# vLLM serves a bf16 model in float16 there.
SMALL_GPU_MODEL = "Qwen/Qwen2.5-3B-Instruct"
