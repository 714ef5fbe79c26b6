#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""A module docstring
spanning three lines, with a # that is not a comment
"""

import os  # a trailing comment: the line is code

QUERY = """
# not a comment: this string is a value
SELECT 1
"""
HASH = "# not a comment either"


class Stock:
    '''A class docstring.'''

    count: int = 0
    """An attribute docstring."""

    def restock(self, n):
        """Add ``n`` items.

        Returns the new count.
        """
        # a comment line inside a function
            # an over-indented comment
        self.count += n  # code with a comment
        text = ("a"
                # a comment between the parts of an expression
                "b")
        r"""A raw docstring-like statement: no effect, a block comment."""
        return self.count

    def one_liner(self): """Docstring on the def line: the line is code."""


def f(x): return x  # code
call(
    """an argument, not a docstring""",
)
