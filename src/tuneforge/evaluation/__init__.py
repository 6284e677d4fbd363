"""Did fine-tuning help? Score the base and the tuned model on held-out data, side by side.

`commands/evaluate.run_eval` is `tuneforge eval`; `compare.quick_eval` is the short check at the end of
`tuneforge train`. Both keep one copy of the base weights: the peft model with its adapter
switched off *is* the base model.
"""
