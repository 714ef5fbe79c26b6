"""The composition root: the ``ptbot`` command line, which wires every other package together.

Nothing in ``analyzer``, ``miners``, ``bot`` or ``workers`` imports this package.
"""
