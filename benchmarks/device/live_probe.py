"""What `llmhost status` would show for natively started services (the GPU test machine has no
Docker for it to list containers): the plan's services, each read live through llmhost.verify.live
on the port it was started on, twice, a few seconds apart, while a load runs.

    python benchmarks/device/live_probe.py --profile gpu --port vllm-gpu=8000 --out live.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from llmhost.cli.app import App
from llmhost.verify.live import read_live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before the first")
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--out", type=Path, required=True)
    ns = parser.parse_args()
    ports = dict(item.split("=", 1) for item in ns.port)
    _, plan = App(None, False).plan(ns.profile)
    services = tuple(
        replace(s, port=int(ports[s.name]), bind_address="127.0.0.1")
        for s in plan.services
        if s.name in ports
    )
    time.sleep(ns.delay)
    rounds = []
    previous: dict = {}
    for _ in range(2):
        live, previous = read_live(services, None, previous)
        rounds.append({name: asdict(row) for name, row in live.items()})
        time.sleep(ns.interval)
    ns.out.write_text(json.dumps({"ports": ports, "rounds": rounds}, indent=2))
    print(json.dumps(rounds[-1]))


if __name__ == "__main__":
    main()
