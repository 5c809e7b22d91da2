"""Importing this module fails: the server must stop with status 3."""

raise ImportError("FG-IMPORT-BROKEN: this module cannot be imported")
