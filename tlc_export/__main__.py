"""`python -m tlc_export ...` — the same CLI as `tlc`; this entry point is what `torchrun` launches."""

from tlc_export.cli import main

if __name__ == "__main__":
    main()
