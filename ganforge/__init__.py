"""The `ganforge` command line: run the service's processes."""
