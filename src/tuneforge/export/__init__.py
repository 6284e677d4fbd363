"""`tuneforge export`: a tuned model as a plain Hugging Face folder or a GGUF file (llama.cpp, Ollama).

merge.py folds the adapter in, gguf_writer.py and gguf_tokenizer.py write GGUF, modelfile.py
writes the Ollama Modelfile, model_card.py the README, checks.py refuses bad input before any
weights load; `commands/export.run_export` ties them together.
"""
