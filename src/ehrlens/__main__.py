"""``python -m ehrlens`` is the ``ehrlens`` command."""

from .cli import main

main()
