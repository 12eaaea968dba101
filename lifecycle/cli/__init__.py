"""The `mentorlus` command for operators: one module per command group, each declaring its
subcommands' parsers (in the two shapes of `subcommands`) next to the commands they run, and
`main`, which parses the command line and turns each result or error into the output and the
exit code. The top entry point: it may import every other lifecycle package; nothing imports it.
"""
