"""The `servicetime` command line: one module per command group."""
