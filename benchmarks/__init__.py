"""Benchmarks of requests-bloxs-errors against the alternatives; see README.rst here."""
