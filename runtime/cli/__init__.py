"""The ``sluiceway`` command: the parser, output helpers and every command."""
