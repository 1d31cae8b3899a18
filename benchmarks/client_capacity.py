"""Print how many streamed tokens/s the llmhost bench client sustains (it must never be the
bottleneck). Usage: python benchmarks/client_capacity.py [--concurrency 1 4 16] [--tokens 2000]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

from llmhost.verify.bench.capacity import measure_client_capacity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per request")
    parser.add_argument("--requests", type=int, default=8, help="at least 2 x concurrency")
    args = parser.parse_args()
    for concurrency in args.concurrency:
        capacity = measure_client_capacity(
            tokens_per_request=args.tokens,
            requests=max(args.requests, 2 * concurrency),
            concurrency=concurrency,
        )
        print(json.dumps({**asdict(capacity), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
