"""Tests of requests_bloxs_errors.pipeline: the decision, the attempt loop, retries,
faults, steps.
"""
