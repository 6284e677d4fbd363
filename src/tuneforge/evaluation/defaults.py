"""The evaluation's defaults, in one place; stdlib only, so the CLI can show them in --help cheaply.

Measured with benchmarks/eval_generation.py on SmolLM2-135M, 2-core CPU, 64 new tokens: one prompt
at a time takes 3.5 s per answer; batches of 8, 16, 32 and 64 take 0.84, 0.62, 0.50 and 0.47 s.
"""

LIMIT = 100  # examples `tuneforge eval` scores by default: about 2-3 minutes on a 2-core CPU
MAX_NEW_TOKENS = 96  # longest answer generated; most medical-term definitions fit
BATCH_SIZE = 32  # prompts answered together; past 32 the gain on a CPU is small (see above)
QUICK_MAX_NEW_TOKENS = 64  # the shorter check at the end of training
