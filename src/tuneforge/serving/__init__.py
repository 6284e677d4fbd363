"""`tuneforge serve`: the tuned model behind the OpenAI API, with a small chat page.

- commands/serve.py (outside this package): `run_serve`; checks the settings and binds the port first
- loading.py: the base model once, plus each LoRA adapter (safetensors only, no remote code)
- engine.py: prompts to tokens, context checks, one forward or one generate() call
- adapters.py: a lone adapter merged at load; several adapters mixed in one batch
- batching.py and decoding.py: requests decode together and join between tokens
- jobs.py: a request's job, its result and the stop rules
- request_queue.py: a bounded line in front of the batch, 429 when it is full
- app.py: the FastAPI app and its routes; schemas.py and responses.py: the OpenAI shapes
- streaming.py: server-sent events; guards.py: API key and body size; errors.py: error shape
- limits.py: the server's limits and their defaults
"""
