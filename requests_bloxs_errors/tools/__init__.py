"""The tools around the library: the command line, the demo, configuration from the
environment, and the pytest plugin.

``cli`` (``python -m requests_bloxs_errors``), ``outbox_cli`` (its ``outbox``
commands), ``envconfig`` (``RBE_*``, ``BLOXS_*`` and ``DEALCLOUD_*``
variables: ``run`` and ``install_from_env()``; ``settings`` parses each
variable, ``alert_target`` is ``RBE_ALERT``), ``demo`` (a scripted
workload against the simulator), ``pytest_plugin`` (the ``bloxs_simulator``
fixture), ``_term`` (terminal output) and ``_argtypes`` (bounded numbers
for the parsers).

May import anything in the package; nothing outside it imports from here
except :mod:`..__main__` and, lazily, the package's ``install_from_env``.
"""
