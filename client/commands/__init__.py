"""One module per bfctl command: `register(subparsers)` adds it, `run(args, stub)` does it."""
