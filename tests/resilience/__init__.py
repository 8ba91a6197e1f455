"""Tests of requests_bloxs_errors.resilience: pacing, the circuit breaker, the outbox, and
their shared state.
"""
