"""Print, one per line, the cmake arguments the llama.cpp CUDA image build runs for a plan.

Renders templates/llama-cuda.Dockerfile.j2 exactly as `llmhost build` does and reads the
exec-form `cmake -S . -B build ...` array back, so a host without Docker builds with the same flags.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from llmhost.actions.build import render_dockerfile
from llmhost.plan.config import Config
from llmhost.plan.planner import BuildPlan


def main(plan_json: str) -> None:
    data = json.loads(Path(plan_json).read_text())
    build = BuildPlan(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in data["build"].items()}
    )
    # render_dockerfile reads the service's registry entry and GPU flag, the plan's build.
    service = SimpleNamespace(name="llama-gpu", gpu=True)
    plan = SimpleNamespace(build=build)
    dockerfile = render_dockerfile(service, plan, Config(), "unused", {}, 1)  # type: ignore[arg-type]
    match = re.search(r'RUN \["cmake", "-S", "\.", "-B", "build", \\\n(.*?)\]\n', dockerfile, re.S)
    if not match:
        raise SystemExit("could not find the cmake configure step in the rendered Dockerfile")
    args = json.loads("[" + match.group(1).replace("\\\n", "") + "]")
    print("\n".join(args))


if __name__ == "__main__":
    main(sys.argv[1])
