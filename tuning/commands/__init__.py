"""One module per ``poketune`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""
