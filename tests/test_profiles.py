"""Profiles are the one source of engine flags; these tests pin what they promise."""

from __future__ import annotations

import pytest

import labs
from labs.serving import server
from labs.serving.profiles import CPU_BASE_FLAGS, PROFILES, get_profile


def _flag_values(flags: tuple[str, ...]) -> dict[str, str]:
    return dict(f.removeprefix("--").partition("=")[::2] for f in flags)


def test_naive_is_the_articles_five_flags_on_gpu() -> None:
    settings = labs.Settings.from_env(backend="gpu", gpu_model="Qwen/Qwen2.5-7B-Instruct")
    cmd = server.engine_command(labs.get_profile("naive"), settings, settings.gpu_model)
    flags = [c.split("=")[0] for c in cmd if c.startswith("--")]
    # model, download dir, host, port (+ served name); the API key travels as VLLM_API_KEY.
    assert flags == ["--model", "--served-model-name", "--download-dir", "--host", "--port"]
    assert server.engine_env(settings)["VLLM_API_KEY"] == settings.api_key
    assert not any(settings.api_key in c for c in cmd)


def test_bounded_adds_the_articles_two_caps_on_gpu() -> None:
    assert PROFILES["bounded"].flags("gpu") == ("--max-num-seqs=8", "--max-model-len=8192")


@pytest.mark.parametrize("name", ["bounded", "engine-queue"])
def test_cpu_caps_fit_the_small_pool(name: str) -> None:
    # max_num_seqs x max_model_len must fit the pool, or the bounded engine can still preempt.
    values = _flag_values(PROFILES[name].flags("cpu"))
    pool = int(values["num-gpu-blocks-override"]) * 128
    assert int(values["max-num-seqs"]) * int(values["max-model-len"]) <= pool


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_cpu_profile_gets_the_cpu_adaptations(name: str) -> None:
    flags = PROFILES[name].flags("cpu")
    assert flags[: len(CPU_BASE_FLAGS)] == CPU_BASE_FLAGS
    values = _flag_values(flags)
    if "num-gpu-blocks-override" in values:  # vLLM refuses a pool smaller than one request
        assert int(values["max-model-len"]) <= int(values["num-gpu-blocks-override"]) * 128


def test_unknown_profile_lists_the_valid_ones() -> None:
    with pytest.raises(labs.ConfigError) as err:
        labs.get_profile("fast")
    for name in PROFILES:
        assert name in str(err.value)


def test_cpu_env_binds_threads_and_goes_offline() -> None:
    env = server.engine_env(labs.Settings.from_env(backend="cpu"))
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_OMP_THREADS_BIND"]
    assert env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_gateway_never_lets_more_in_than_the_engine_runs(backend: str) -> None:
    profile = PROFILES["gateway"]
    engine = _flag_values(profile.flags(backend))
    gateway = _flag_values(profile.gateway(backend) or ())
    assert int(gateway["max-in-flight"]) <= int(engine["max-num-seqs"])
    assert int(gateway["max-prompt-tokens"]) < int(engine["max-model-len"])
    assert PROFILES["bounded"].gateway(backend) is None


def test_gateway_command_points_at_the_engine_port() -> None:
    settings = labs.Settings.from_env(backend="cpu", port=8100)
    cmd = server.gateway_command(PROFILES["gateway"], settings, "http://127.0.0.1:8101")
    assert cmd[1:3] == ["-m", "labs.gateway"]
    assert "--upstream=http://127.0.0.1:8101" in cmd and "--port=8100" in cmd
    with pytest.raises(labs.ConfigError):
        server.gateway_command(PROFILES["naive"], settings, "http://127.0.0.1:8101")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_vllms_queue_cap_holds_as_many_requests_as_the_gateway(backend: str) -> None:
    # vLLM counts running + waiting against --max-num-queued-reqs; the gateway admits N into
    # the engine and queues M: notebook 05 compares the two at the same depth.
    from labs.serving.profiles import flag_value

    queued = flag_value(get_profile("engine-queue").flags(backend), "max-num-queued-reqs")
    gateway = get_profile("gateway").gateway(backend)
    assert int(queued) == int(flag_value(gateway, "max-in-flight")) + int(
        flag_value(gateway, "max-queue"))


def test_one_flag_reader_says_what_an_absent_flag_means() -> None:
    from labs.serving.profiles import flag_value

    flags = ("--max-num-seqs=4", "--max-model-len", "2048", "--max-num-seqs=8")
    assert flag_value(flags, "max-num-seqs") == "8"  # the last one wins, as in argparse
    assert flag_value(flags, "max-model-len") == "2048"
    assert flag_value(flags, "max-num-queued-reqs") is None  # vLLM's default applies
    with pytest.raises(KeyError, match="max-num-queued-reqs"):
        flag_value(flags, "max-num-queued-reqs", required=True)
    with pytest.raises(ValueError, match="without its dashes"):
        flag_value(flags, "--max-num-seqs")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_a_flag_that_states_vllms_default_is_the_same_engine(backend: str) -> None:
    """06's prefix-cache server is the one 04 left (kv-pressure): caching is vLLM's default."""
    same = labs.serving.profiles.same_engine
    if backend == "cpu":
        assert same("kv-pressure", (), "prefix-cache", (), backend)
    else:  # on the GPU prefix-cache is naive plus the flag
        assert same("naive", (), "prefix-cache", (), backend)
    assert not same("kv-pressure", (), "no-prefix-cache", (), backend)
    assert not same("kv-pressure", (), "kv-pressure", ("--max-num-seqs=4",), backend)


def test_an_engine_with_a_gateway_in_front_is_not_the_bare_engine() -> None:
    """gateway's engine has bounded's flags, but its port answers through the gateway."""
    assert PROFILES["gateway"].flags("cpu") == PROFILES["bounded"].flags("cpu")
    assert not labs.serving.profiles.same_engine("bounded", (), "gateway", (), "cpu")
