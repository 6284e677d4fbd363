"""`python -m tuneforge` is the same as the `tuneforge` command (torchrun needs a module)."""

from tuneforge.cli import main

if __name__ == "__main__":
    main()
