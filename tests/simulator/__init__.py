"""Tests of requests_bloxs_errors.simulator."""
