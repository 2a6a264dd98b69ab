"""Compiled (Cython) extension modules.

``_ext/rserpool/_c/<name>.pyx`` is built as ``rserpool._c.<name>`` by
``make build`` (``setup.py build_ext --inplace``) or any pip install.  Never
import these directly: use :func:`rserpool._accel.load`, which falls back to
the pure-Python twin when a module is not built.
"""
