"""charrnn: character-level and subword RNN language models for the command line."""

__version__ = "0.1.0"
