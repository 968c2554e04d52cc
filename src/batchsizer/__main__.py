"""``python -m batchsizer``: the same as the ``batchsizer`` command."""

from batchsizer.cli import main

main()
