"""Tests of requests_bloxs_errors.tools: the command line, run, configuration from the
environment.
"""
