"""``python -m service.cli``: the ``facegate`` command."""

from service.cli import main

main()
