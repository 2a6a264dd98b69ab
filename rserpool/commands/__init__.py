"""One module per ``rserpool`` subcommand (see ``rserpool.cli.COMMANDS``)."""
