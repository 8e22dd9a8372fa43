"""The CPU calibrations and pool the tests plan and replay with, written once.

Step costs as `labs.calibration` fitted them on the course's 2-core machines: AVX-512 (50 ms a
step, 1.54 ms a sequence; this Xeon's saved calibration has the same fit), the slowest
AVX2-only EPYC, and a CPU with twice the slow one's step costs (slower than any the course
has met). NAIVE is the naive profile's 2 GiB pool on the CPU.

The model's own tests (servermodel, simulate, calibration, sizing, experiments) replay on
FAST_CPU and SLOW_CPU, with the CPU profiles' limits and the article card's pool.
"""

from __future__ import annotations

from labs.model.steps import LinearSteps, ServerLimits

NAIVE = ServerLimits(num_blocks=364, block_size=128, max_model_len=8192, max_num_seqs=128,
                     max_num_batched_tokens=2048)
AVX512 = LinearSteps(fixed_s=0.050, per_seq_s=0.00154, per_context_token_s=3.9e-6,
                     prefill_tok_s=1488, request_overhead_s=0.040, per_prefill_pair_s=5.7e-7)
AVX2 = LinearSteps(fixed_s=0.047, per_seq_s=0.0024, per_context_token_s=5.6e-6,
                   prefill_tok_s=654, request_overhead_s=0.040, per_prefill_pair_s=5.7e-7)
TWICE_AVX2 = LinearSteps(fixed_s=0.094, per_seq_s=0.0048, per_context_token_s=11.2e-6,
                         prefill_tok_s=327, request_overhead_s=0.040, per_prefill_pair_s=1.14e-6)

# Two CPUs this project has met: 2026-12-01's calibration of a 2-core AMD EPYC with AVX-512
# (this session), and the 2026-11-22 figures of a 2-core AVX2 EPYC (DESIGN.md: 26 tok/s alone,
# ~400 prompt tok/s).
FAST_CPU = LinearSteps(fixed_s=0.0177, per_seq_s=0.000905, per_context_token_s=1.2e-6,
                       prefill_tok_s=1900, request_overhead_s=0.0002, per_prefill_pair_s=4e-10)
SLOW_CPU = LinearSteps(fixed_s=0.036, per_seq_s=0.003, per_context_token_s=2.3e-6,
                       prefill_tok_s=400, request_overhead_s=0.02)
CPU_NAIVE = ServerLimits(num_blocks=364, block_size=128, max_model_len=8192,
                         max_num_seqs=128, max_num_batched_tokens=2048)
CPU_KV_PRESSURE = ServerLimits(num_blocks=40, block_size=128, max_model_len=2048,
                               max_num_seqs=128, max_num_batched_tokens=2048)
CPU_BOUNDED = ServerLimits(num_blocks=40, block_size=128, max_model_len=1280,
                           max_num_seqs=4, max_num_batched_tokens=2048)
# The article's card: /metrics said 2,426 blocks of 16; Qwen2.5-7B's max_model_len 32,768.
ARTICLE = ServerLimits(num_blocks=2426, block_size=16, max_model_len=32768,
                       max_num_seqs=256, max_num_batched_tokens=2048)
