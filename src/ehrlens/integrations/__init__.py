"""Adapters that let ehrlens explain models from other libraries.

Each adapter lives in its own module and imports its library only when that module is
imported, so ``import ehrlens`` and ``import ehrlens.integrations`` never need an optional
extra:

- :mod:`ehrlens.integrations.huggingface`: Hugging Face ``transformers`` encoders (BERT
  family), extra ``ehrlens[hf]``.
"""
