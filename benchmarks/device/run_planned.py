"""Start one planned service natively, the way its compose service runs it: the plan's arguments
and environment, its cpuset (taskset) and its GPUs (CUDA_VISIBLE_DEVICES, which is what the
compose file's device_ids give the container); the container's /models mount becomes
--models-dir, and --host-port stands for compose's port mapping where two copies of one
service run side by side. For hosts without Docker (the GPU test machine). The exact command
and environment are written next to the log, as JSON, before the server starts.

    python benchmarks/device/run_planned.py PLAN.json SERVICE --models-dir DIR --log FILE \\
        -- ENGINE [ENGINE-ARGS...]     # e.g. -- /opt/llama/bin/llama-server
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def command(
    plan: dict, service: str, models_dir: Path, engine: list[str], host_port: int | None = None
) -> tuple[list, dict]:
    svc = next((s for s in plan["services"] if s["name"] == service), None)
    if svc is None:
        raise SystemExit(f"{service} is not in this plan")
    args = [a.replace("/models/", f"{models_dir}/", 1) if a.startswith("/models/") else a
            for a in svc["args"]]  # fmt: skip
    if host_port is not None:
        args[args.index("--port") + 1] = str(host_port)
    env = dict(svc["env"])
    if svc["gpus"]:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, svc["gpus"]))
    return ["taskset", "-c", svc["cpuset"], *engine, *args], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", type=Path)
    parser.add_argument("service")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--host-port", type=int, help="listen here instead of the container port")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    ns, engine = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    argv, env = command(
        json.loads(ns.plan.read_text()), ns.service, ns.models_dir, engine, ns.host_port
    )
    ns.log.parent.mkdir(parents=True, exist_ok=True)
    ns.log.with_suffix(".cmd.json").write_text(json.dumps({"argv": argv, "env": env}, indent=2))
    with ns.log.open("ab") as log:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    print(proc.pid)


if __name__ == "__main__":
    main()
