"""One module per bfctl command: `register(subparsers)` adds it, `run(args, bfd)` does it through
the `api.Client`."""
