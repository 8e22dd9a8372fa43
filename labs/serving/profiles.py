"""Serving profiles: the one place that names the engine flags of every setup in the course.

A profile is the article's flag set (`engine_flags`, as it would run on the GPU) plus the
adaptations the embedded CPU default needs to show the same behaviour on a 135 M model
(`cpu_flags`). The local launcher, the docker compose file and the Kubernetes overlays all
read these tuples; tests/test_profiles.py proves they agree.

The five base flags of the article's naive deployment (model, download dir, API key, host,
port) are added by `labs.server.engine_command`, because they depend on where it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

from ..errors import ConfigError

# Flags every embedded (CPU) profile gets; why each one is here:
#   --dtype float32      bf16 without AVX-512 is compute-bound and hides the batching gain
#   --enforce-eager      ready in ~35 s instead of ~2 min of torch.compile; notebooks restart
#                        the engine per profile, so start-up is course time
#   --kv-cache-memory-bytes=2 GiB   an explicit pool (46,592 tokens) that is the same on every
#                        machine; without it the CPU build reserves 92 % of the NUMA node's
#                        memory and refuses to start when that much is not free
CPU_BASE_FLAGS: tuple[str, ...] = (
    "--dtype=float32", "--enforce-eager", "--kv-cache-memory-bytes=2147483648",
)

# A small KV pool so that 16 users x ~1,000-token prompts ask for ~3x what exists, the same
# demand/pool ratio as the article's 32 x 4,000 against 38,816 tokens. CPU blocks are 128
# tokens: 40 x 128 = 5,120 tokens. vLLM refuses to start if one max-model-len request cannot
# fit in the pool, so max-model-len must stay <= 5,120.
CPU_SMALL_KV_FLAGS: tuple[str, ...] = ("--num-gpu-blocks-override=40", "--max-model-len=2048")


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    engine_flags: tuple[str, ...] = ()
    cpu_flags: tuple[str, ...] = ()
    # Flags of `python -m labs.gateway` when the profile puts the course gateway in front of
    # the engine (None: no gateway). The gateway takes the public port; the engine the next.
    gateway_flags: tuple[str, ...] | None = None
    gateway_cpu_flags: tuple[str, ...] | None = None

    def flags(self, backend: str) -> tuple[str, ...]:
        """Engine flags beyond the five base flags, for `cpu` or `gpu`."""
        if backend == "gpu":
            return self.engine_flags
        return CPU_BASE_FLAGS + self.cpu_flags

    def gateway(self, backend: str) -> tuple[str, ...] | None:
        """Gateway flags for `cpu` or `gpu`, or None when this profile has no gateway."""
        return self.gateway_flags if backend == "gpu" else self.gateway_cpu_flags


_BOUNDED_GPU = ("--max-num-seqs=8", "--max-model-len=8192")
# Scaled so that max-num-seqs x max-model-len fits the 5,120-token pool: 4 x 1,280.
_BOUNDED_CPU = ("--num-gpu-blocks-override=40", "--max-num-seqs=4", "--max-model-len=1280")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "naive",
            "the article's five flags: no cap on what the engine accepts",
        ),
        Profile(
            "kv-pressure",
            "naive, with a small KV pool on the CPU so exhaustion is reachable",
            cpu_flags=CPU_SMALL_KV_FLAGS,
        ),
        # Notebook 06: the same small pool with prefix caching on (vLLM 0.32's default, said
        # out loud). Its control runs on this server too, each request with a cache_salt of
        # its own (Workload.salt_each_request): no restart, and nothing can be shared.
        # `no-prefix-cache` turns it off altogether, for a learner (and a deployment) that
        # wants the flag rather than the salt.
        Profile(
            "prefix-cache",
            "kv-pressure with prefix caching on (vLLM's default): shared prefixes share blocks",
            engine_flags=("--enable-prefix-caching",),
            cpu_flags=CPU_SMALL_KV_FLAGS + ("--enable-prefix-caching",),
        ),
        Profile(
            "no-prefix-cache",
            "kv-pressure with prefix caching off: every prompt computes and holds its own KV",
            engine_flags=("--no-enable-prefix-caching",),
            cpu_flags=CPU_SMALL_KV_FLAGS + ("--no-enable-prefix-caching",),
        ),
        Profile(
            "bounded",
            "the article's fix: cap in-flight sequences and context length",
            engine_flags=_BOUNDED_GPU,
            cpu_flags=_BOUNDED_CPU,
        ),
        Profile(
            "engine-queue",
            "bounded, plus vLLM's own admission control (503 when the queue is full)",
            # vLLM counts running + waiting against --max-num-queued-reqs: set to the
            # gateway profile's N + M, both hold the same number of requests, so notebook
            # 05 compares where the excess is refused and how, not how much is admitted.
            engine_flags=_BOUNDED_GPU + ("--max-num-queued-reqs=8",),
            cpu_flags=_BOUNDED_CPU + ("--max-num-queued-reqs=3",),
        ),
        Profile(
            "gateway",
            "the bounded engine behind the course gateway: a bounded FIFO that sheds with 503",
            engine_flags=_BOUNDED_GPU,
            cpu_flags=_BOUNDED_CPU,
            # N = the engine's max-num-seqs, so the engine itself never queues. M = 0: sized
            # for notebook 05's SLO (served requests within 3x the unloaded TTFT), because a
            # queued request waits for a whole answer to finish; notebook 05's exercise trades
            # latency for fewer 503s by raising it. Prompts are checked against max-model-len
            # minus room for the answer.
            gateway_flags=("--max-in-flight=8", "--max-queue=0", "--max-queue-wait-s=30",
                           "--retry-after-s=2", "--max-prompt-tokens=7168"),
            # On 2 CPU cores every extra sequence visibly lengthens the step that carries a new
            # request's prefill, so the CPU gateway keeps one engine slot free (N = 3 of 4).
            gateway_cpu_flags=("--max-in-flight=3", "--max-queue=0", "--max-queue-wait-s=10",
                               "--retry-after-s=2", "--max-prompt-tokens=1024"),
        ),
    )
}

DEFAULT_PROFILE = "naive"


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a ConfigError that lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(PROFILES)
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {valid}.") from None


# Flags that only say vLLM's default out loud (prefix caching is on in vLLM 0.32 unless a
# platform turns it off): an engine started without them is the same engine.
VLLM_DEFAULT_FLAGS: frozenset[str] = frozenset({"--enable-prefix-caching"})


def engine_flags(profile: str, extra_flags: Sequence[str], backend: str) -> tuple[str, ...]:
    """A setup's engine flags beyond the five base flags: its profile's, then `extra_flags`."""
    return (*get_profile(profile).flags(backend), *extra_flags)


def same_engine(profile: str, extra_flags: Sequence[str], other: str,
                other_extra_flags: Sequence[str], backend: str) -> bool:
    """Whether two setups run the same engine with the same gateway in front, so a server
    started for one serves the other without a restart (06's `prefix-cache` on the
    `kv-pressure` server 04 leaves, say: ~30 s a start on the CPU is course time)."""
    def engine(name: str, extra: Sequence[str]) -> frozenset[str]:
        return frozenset(engine_flags(name, extra, backend)) - VLLM_DEFAULT_FLAGS

    return (engine(profile, extra_flags) == engine(other, other_extra_flags)
            and get_profile(profile).gateway(backend) == get_profile(other).gateway(backend))


@overload
def flag_value(flags: Sequence[str], name: str, *, required: Literal[True]) -> str: ...
@overload
def flag_value(flags: Sequence[str], name: str, *, required: bool = False) -> str | None: ...
def flag_value(flags: Sequence[str], name: str, *, required: bool = False) -> str | None:
    """The value of `--name=V` or `--name V` in an argument list, read as argparse reads it
    (the last one wins). `name` is the flag without its dashes ("max-num-seqs").

    When the flag is absent: None, for a caller that falls back to vLLM's default
    (`labs.model.steps.limits_from`); a KeyError with `required=True`, for a caller that
    reads a flag the profile must set (the router's per-engine cap, `labs.deploy.manifests`)."""
    if name.startswith("-"):
        raise ValueError(f"flag_value takes the name without its dashes: "
                         f"{name.lstrip('-')!r}, not {name!r}.")
    value = None
    for i, arg in enumerate(flags):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(flags):
            value = flags[i + 1]
    if value is None and required:
        raise KeyError(f"--{name} is not among {list(flags)}")
    return value
