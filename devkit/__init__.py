"""Machinery shared by the test suite and the benchmarks (not part of the installed service).

``tests/`` and ``bench/`` never import each other; what both need lives here: a real
``facegate serve`` subprocess (``server.py``), embeddings shaped like real face
embeddings (``face_shaped.py``), the mixed load generator (``load.py``) and the fault
injections (``faults.py``).
"""
