"""``python -m nexus_client verify EXPORT.jsonl``: offline verification of an export."""

import sys

from .verify import main

if len(sys.argv) < 2 or sys.argv[1] != "verify":
    print("usage: python -m nexus_client verify EXPORT.jsonl", file=sys.stderr)
    sys.exit(2)
sys.exit(main(sys.argv[2:]))
