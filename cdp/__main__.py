"""``python -m cdp``: the same as the ``cdp`` command."""

from cdp._cli import main

if __name__ == "__main__":
    main()
