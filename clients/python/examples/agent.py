#!/usr/bin/env python3
"""An example agent: watch → claim → work → resolve.

It follows the server's event stream for Intents under a topic glob, claims each one
(losing a race to another agent is normal: it moves on), does the work — here, summing
the `numbers` of the Intent's body — and submits a Fact that resolves the Intent with
the claim's fencing token. A lease longer than the work means no renewal is needed.

    python examples/agent.py --server http://127.0.0.1:7878 --topic 'demo/**'
    # in another shell:
    nexus intent propose demo/sum --body '{"numbers": [1, 2, 3]}'
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nexus_client import ApiError, Client, ErrorCode, KeyFile, NexusError, Record, records

SKIPPED = {ErrorCode.ALREADY_CLAIMED, ErrorCode.ALREADY_RESOLVED, ErrorCode.WITHDRAWN, ErrorCode.INADMISSIBLE}


def work(body: Any) -> dict[str, Any]:
    """The agent's job: sum the integers of `numbers`."""
    numbers = body.get("numbers") if isinstance(body, dict) else None
    if not isinstance(numbers, list) or not all(type(n) is int for n in numbers):
        return {"status": "failed", "error": "the body has no list of integers `numbers`"}
    return {"status": "ok", "sum": sum(numbers)}


def handle(client: Client, key: KeyFile, intent: Record, lease_ms: int) -> bool:
    """Claims, works on and resolves one Intent; False when another agent has it."""
    try:
        lease = client.claim(records.claim(key, client.deployment(), intent, lease_ms))
    except ApiError as e:
        if e.code in SKIPPED:
            print(f"skip {intent.hash[:12]}: {e.code}", flush=True)
            return False
        raise
    result = work(intent.body)
    assert intent.topic is not None
    answer = records.fact(key, intent.topic, result, [intent.hash], resolves=(intent, lease.token))
    client.submit_fact(answer)
    print(f"resolved {intent.hash[:12]} (token {lease.token}) with {answer.hash[:12]}: {result}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:7878")
    p.add_argument("--key", help="key file (default: $NEXUS_HOME/key, else ~/.config/nexus/key)")
    p.add_argument("--topic", default="demo/**", help="topic glob of the Intents to work on")
    p.add_argument("--lease-ms", type=int, default=30_000)
    p.add_argument("--max", type=int, default=0, help="stop after resolving this many Intents (0: never)")
    args = p.parse_args(argv)
    try:
        key = KeyFile.load(args.key)
        with Client(args.server) as client:
            print(f"agent {key.author[:12]} watching {args.topic} on {args.server}", flush=True)
            done = 0
            for entry in client.events(topic=args.topic):
                if entry.record is None or entry.record.kind != "intent":
                    continue
                if handle(client, key, entry.record, args.lease_ms):
                    done += 1
                    if done == args.max:
                        return 0
    except NexusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
