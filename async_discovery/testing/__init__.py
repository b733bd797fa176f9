"""Local stand-ins for AWS used by the demo, the benchmark and the tests (loopback only).

Needs the ``demo`` extra (``moto[server]``).
"""
