"""The command line: parse, call the library, render results. One module per verb."""
