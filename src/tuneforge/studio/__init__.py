"""`tuneforge studio`: a local web page that starts `tuneforge train/eval/export` and watches their run folders.

One engine: the page never trains itself; it runs the same CLI commands as child processes and
reads what they write (the run log, metrics.json, the run marker), so every guarantee of the CLI
(resume, out-of-memory step-down, never overwriting a finished run) holds here too.
"""
