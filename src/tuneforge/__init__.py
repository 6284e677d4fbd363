"""tuneforge: fine-tune a language model on your own machine with one command."""

__version__ = "0.1.0"
