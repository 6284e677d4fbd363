"""The evaluation's defaults, in one place; stdlib only, so the CLI can show them in --help cheaply."""

LIMIT = 100  # examples `tuneforge eval` scores by default (the full held-out set takes much longer on a CPU)
MAX_NEW_TOKENS = 96  # longest answer generated; most medical-term definitions fit
BATCH_SIZE = 8  # prompts generated together; see benchmarks/eval_generation.py
QUICK_MAX_NEW_TOKENS = 64  # the shorter check at the end of training
