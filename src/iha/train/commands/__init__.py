"""``iha`` subcommands of the training engine: train, generate, describe, plot."""
