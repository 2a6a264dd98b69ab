"""Test support for rserpool (not used by the library itself).

* :mod:`rserpool.testing.uml` runs commands inside a User-Mode Linux kernel,
  which gives tests real kernel SCTP on hosts (and CI machines) without it.
* :mod:`rserpool.testing.pytest_sctp` is the pytest plugin that runs the
  tests marked ``@pytest.mark.sctp`` there.
* :mod:`rserpool.testing.aio` holds the asyncio helpers the test modules
  share (deadlines, polling a condition, a transport message collector).

Importing this package imports nothing else.
"""
