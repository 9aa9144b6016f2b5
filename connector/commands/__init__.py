"""The command line's sub-commands, one module per command or group; ``connector.cli`` assembles them."""
