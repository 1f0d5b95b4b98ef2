"""The toolkit's library: everything the four stage scripts and apo_algorithm.py share.

One flat package, one concern per module (docs/ARCHITECTURE.md has the map). Imports go
downward only: the stage scripts -> apo_algorithm -> apo.*, and no module here imports a
stage script (tests/test_layout.py checks it).
"""
