"""Tests of requests_bloxs_errors.errors: the table, the parsers, classification, error bodies."""
