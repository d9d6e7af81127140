"""One module per ``ehrlens`` command; :mod:`ehrlens.cli.app` adds them to the group.

A command module imports click and the small :mod:`ehrlens.cli` helpers at import time, and
the library (torch included) only inside the command's function.
"""
