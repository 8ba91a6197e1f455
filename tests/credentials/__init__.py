"""Tests of requests_bloxs_errors.credentials: the vendors' credentials, re-authentication,
the shared token cache.
"""
