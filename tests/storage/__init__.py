"""Tests of requests_bloxs_errors.storage: the backends, their registry and sealing."""
