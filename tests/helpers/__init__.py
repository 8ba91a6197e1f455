"""Helpers for the tests: loopback servers (HTTP, raw sockets, a proxy, TLS, Redis) and the
client scripts the fleet tests run as subprocesses.
"""
