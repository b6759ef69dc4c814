"""`python -m streamrec_devservices up|down|status [kafka|redis]`: `streamrec services` itself."""

from __future__ import annotations

import sys

from streamrec.consumers.cli import main

if __name__ == "__main__":
    sys.exit(main(["services", *sys.argv[1:]]))
