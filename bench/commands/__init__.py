"""One module per `bench.py` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
