"""The error table and what reads it: pure data and parsing, no network.

``table`` (one row per status, the transport rules, and the words for both),
``parsing`` (headers and bodies), ``bodies`` (reading an error body without
losing a byte) and ``classify`` (a response, classified by the table).

May import: :mod:`..exceptions`, :mod:`..events`, :mod:`..urls`. Nothing here
sends a request or keeps state.
"""
