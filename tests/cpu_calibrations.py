"""The CPU calibrations and pool the tests plan and replay with, written once.

Step costs as `labs.calibration` fitted them on the course's 2-core machines: AVX-512 (50 ms a
step, 1.54 ms a sequence; this Xeon's saved calibration has the same fit), the slowest
AVX2-only EPYC, and a CPU with twice the slow one's step costs (slower than any the course
has met). NAIVE is the naive profile's 2 GiB pool on the CPU.
"""

from __future__ import annotations

from labs.servermodel import LinearSteps, ServerLimits

NAIVE = ServerLimits(num_blocks=364, block_size=128, max_model_len=8192, max_num_seqs=128,
                     max_num_batched_tokens=2048)
AVX512 = LinearSteps(fixed_s=0.050, per_seq_s=0.00154, per_context_token_s=3.9e-6,
                     prefill_tok_s=1488, request_overhead_s=0.040, per_prefill_pair_s=5.7e-7)
AVX2 = LinearSteps(fixed_s=0.047, per_seq_s=0.0024, per_context_token_s=5.6e-6,
                   prefill_tok_s=654, request_overhead_s=0.040, per_prefill_pair_s=5.7e-7)
TWICE_AVX2 = LinearSteps(fixed_s=0.094, per_seq_s=0.0048, per_context_token_s=11.2e-6,
                         prefill_tok_s=327, request_overhead_s=0.040, per_prefill_pair_s=1.14e-6)
