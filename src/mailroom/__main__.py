"""`python -m mailroom`: the same as the `mailroom` command."""

from mailroom.cli import main

main()
