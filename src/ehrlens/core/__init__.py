"""The leaf layer: small tools every other layer may use; it imports nothing of ehrlens.

- :mod:`~ehrlens.core.fusion`: head fusion of attention maps.
- :mod:`~ehrlens.core.modes`: eval mode with every submodule's flag restored, and the
  per-model lock that serialises explanations of one model.
- :mod:`~ehrlens.core.progress`: optional progress bars.
- :mod:`~ehrlens.core.files`: atomic writes, the overwrite rule of every command, safe file
  names for data-derived outputs, file hashing.
- :mod:`~ehrlens.core.locks`: one writer per output (an exclusive OS file lock).
- :mod:`~ehrlens.core.jsonl`: JSON Lines samples.
- :mod:`~ehrlens.core.ids`: patient ids compared as text; repeated or colliding ids.
- :mod:`~ehrlens.core.outputs`: model outputs from logits (probabilities by task mode).
- :mod:`~ehrlens.core.registry`: objects by name (methods, processors, models): ``Registry``.
"""

__version__ = "0.1.0"
