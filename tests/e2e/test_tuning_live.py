"""Tuning that takes effect, proven on the running server: deploy llama-cpu with a reserved
2 MiB pool and check, through `llmhost doctor`'s live checks, that its weights sit in hugetlb
pages (and the pool's free count really drops), that its compute thread runs on the planned
CPU, and that a pool nothing uses is reported.

On this 2-CPU host the plan has one inference CPU (1) and housekeeping CPU 0. Needs root and a
Docker engine; with LLMHOST_E2E=1 (CI) a missing prerequisite fails instead of skipping.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import infra

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
PROJECT = "llmhost-tune"
PORT = 18101
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
LIVE_CHECKS = ("live.hugepages", "live.threads", "live.pool_used", "live.mlock")


def _prereq(what: str, exc: Exception) -> None:
    if os.environ.get("LLMHOST_E2E") == "1":
        pytest.fail(f"{what}: {exc}")
    pytest.skip(f"{what}: {exc}")


def llmhost(*args: str, env: dict[str, str], check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "llmhost.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"llmhost {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def hugepages_free() -> int:
    text = Path("/proc/meminfo").read_text()
    match = re.search(r"^HugePages_Free:\s+(\d+)", text, re.M)
    assert match, text
    return int(match.group(1))


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The product image, the tiny model, and a state directory of our own."""
    if os.geteuid() != 0:
        _prereq("the live tuning tests need root", RuntimeError("not root"))
    try:
        infra.ensure_dockerd()
        infra.ensure_llama_cpu_image()
        model = infra.ensure_tiny_gguf()
    except Exception as exc:  # any missing prerequisite is reported the same way
        _prereq("e2e infrastructure", exc)
    workdir = tmp_path_factory.mktemp("tuning")
    (workdir / "models").mkdir()
    shutil.copy(model, workdir / "models" / "tiny.gguf")
    env = {**os.environ, "LLMHOST_STATE_DIR": str(workdir / "state"), "TUNE_DIR": str(workdir)}
    yield env
    llmhost("down", env=configured(env, "off", "hugepages: {enabled: false}"))


def configured(env: dict[str, str], name: str, hugepages: str) -> dict[str, str]:
    """A config for this host: one inference core, our project and port, `hugepages` as given."""
    workdir = Path(env["TUNE_DIR"])
    path = workdir / f"llmhost-{name}.yaml"
    path.write_text(
        f"inference_cores: 1\nproject: {PROJECT}\nmodels_dir: {workdir / 'models'}\n"
        f"services:\n  llama-cpu:\n    port: {PORT}\n    model: tiny.gguf\n    ctx_size: 1024\n"
        f"{hugepages}\n"
    )
    return {**env, "LLMHOST_CONFIG": str(path)}


@pytest.fixture
def reserve(base_env: dict[str, str]) -> Iterator[Callable[[int], None]]:
    """reserve(n): n more 2 MiB pages than before the test; the project down and the pool as it
    was afterwards."""
    before = int(NR_HUGEPAGES.read_text())

    def grow(pages: int) -> None:
        NR_HUGEPAGES.write_text(f"{before + pages}\n")
        assert int(NR_HUGEPAGES.read_text()) == before + pages, "the kernel could not reserve"

    yield grow
    llmhost("down", env=configured(base_env, "off", "hugepages: {enabled: false}"), check=True)
    NR_HUGEPAGES.write_text(f"{before}\n")


def live_checks(env: dict[str, str], *extra: str) -> tuple[dict[str, dict], dict]:
    report = json.loads(llmhost("doctor", "--json", *extra, env=env).stdout)
    checks = {c["id"]: c for c in report["checks"]}
    print("\n".join(f"{i}: {checks[i]['status']}: {checks[i]['detail']}" for i in LIVE_CHECKS))
    return checks, report


def test_weights_on_hugepages_and_thread_on_planned_cpu(
    base_env: dict[str, str], reserve: Callable[[int], None]
) -> None:
    # headroom 100 %: glibc gives every malloc arena (one per thread that allocates) its own
    # 2 MiB-page heap, so the server maps more than weights + KV + compute (docs/performance.md).
    env = configured(base_env, "on", "hugepages: {headroom_pct: 100}")
    plan = json.loads(llmhost("plan", "--json", env=env, check=True).stdout)
    pages = plan["hugepages"]["pages"]
    weights = sum(m["weights_bytes"] for m in plan["hugepages"]["models"])
    weights_pages = math.ceil(weights / (2 << 20))
    assert plan["cores"]["compute_cpus"] == [1] and plan["cores"]["housekeeping_cpus"] == [0]
    reserve(pages)
    free_before = hugepages_free()

    llmhost("deploy", "--profile", "cpu", "--no-bench", env=env, check=True)
    checks, report = live_checks(env)
    drop = free_before - hugepages_free()

    assert checks["services.health"]["status"] == "ok", checks["services.health"]
    for check_id in ("live.hugepages", "live.threads", "live.pool_used"):
        assert checks[check_id]["status"] == "ok", checks[check_id]
    assert checks["live.mlock"]["status"] == "skip"

    (server,) = [s for s in report["facts"]["processes"]["services"] if s["project"] == PROJECT]
    used = server["memory"]["hugetlb_kb"] // 2048
    print(
        f"HugePages_Free {free_before} -> {free_before - drop} (drop {drop}); server {used} "
        f"pages; weights need {weights_pages}; plan {pages}"
    )
    # The pool really drops, by the server's pages (give or take the pages a health-check
    # process or a new HTTP thread's arena holds between the two reads), within the plan.
    assert weights_pages <= used <= pages, (weights_pages, used, pages)
    assert abs(drop - used) <= 2, (drop, used)
    assert f"{used} x 2 MiB pages in use" in checks["live.hugepages"]["detail"]
    assert any(m["size_kb"] >= weights // 1024 for m in server["memory"]["mappings"])

    main = next(t for t in server["threads"] if t["tid"] == server["pid"])
    assert (main["cpus_allowed"], main["last_cpu"]) == ([1], 1)
    assert f"{server['pid']}->CPU 1 (ran on 1)" in checks["live.threads"]["detail"]
    assert all(0 not in t["cpus_allowed"] for t in server["threads"])

    # The same verdicts from a snapshot of this host, analysed offline.
    snapshot = Path(env["TUNE_DIR"]) / "host.tar.gz"
    llmhost("snapshot", "-o", str(snapshot), env=env, check=True)
    replayed, _ = live_checks(env, "--from", str(snapshot))
    for check_id in LIVE_CHECKS:
        assert replayed[check_id]["status"] == checks[check_id]["status"], replayed[check_id]


def test_pool_reserved_but_hugepages_disabled_warns(
    base_env: dict[str, str], reserve: Callable[[int], None]
) -> None:
    env = configured(base_env, "off", "hugepages: {enabled: false}")
    plan = json.loads(llmhost("plan", "--json", env=env, check=True).stdout)
    assert plan["hugepages"]["pages"] == 0
    assert "--load-mode" not in plan["services"][0]["args"]
    reserve(20)
    free_before = hugepages_free()

    llmhost("deploy", "--profile", "cpu", "--no-bench", env=env, check=True)
    checks, _ = live_checks(env)

    assert checks["services.health"]["status"] == "ok", checks["services.health"]
    unused = checks["live.pool_used"]
    assert unused["status"] == "warn", unused
    assert unused["detail"].startswith("reserved pool unused:"), unused
    assert "withheld for nothing" in unused["detail"]
    assert unused["remediation"] == "sysctl -w vm.nr_hugepages=0"
    assert checks["live.hugepages"]["status"] == "skip"
    assert checks["live.threads"]["status"] == "ok", checks["live.threads"]
    assert hugepages_free() == free_before  # nothing took a page
    (state,) = json.loads(llmhost("status", "--json", env=env, check=True).stdout)
    assert (state["state"], state["health"]) == ("running", "healthy")


def test_tune_measures_the_plans_knobs_and_doctor_judges_by_them(
    base_env: dict[str, str], reserve: Callable[[int], None]
) -> None:
    """`llmhost tune` on the tiny model in the product image: every knob measured or skipped
    with its reason, the hugetlb setup drawing from a real pool, the result and evidence saved,
    and doctor reading this host's evidence instead of the shipped one."""
    from llmhost.verify.tune.knobs import TUNED

    env = configured(base_env, "on", "hugepages: {headroom_pct: 100}")
    plan = json.loads(llmhost("plan", "--json", env=env, check=True).stdout)
    (svc,) = plan["services"]
    reserve(plan["hugepages"]["pages"] + 32)
    out = Path(env["TUNE_DIR"]) / "tune"
    proc = llmhost("tune", "--rounds", "3", "--reps", "1", "--prompt", "32", "--gen", "8",
                   "--out", str(out), "--json", env=env, check=True)  # fmt: skip
    result = json.loads(proc.stdout)
    print("\n" + proc.stderr)
    setups, runs = result["setups"], result["runs"]
    # read back from the plan: its compute CPU, its hugetlb environment
    mask = svc["args"][svc["args"].index("--cpu-mask") + 1]
    assert setups["pinned"]["args"] == ["-t", "1", "-C", mask, "--cpu-strict", "1"]
    assert setups["pinned_hugetlb"]["env"]["GLIBC_TUNABLES"] == svc["env"]["GLIBC_TUNABLES"]
    assert setups["unpinned"]["args"] == ["-t", "1"]
    for name in setups:  # three interleaved rounds of one repetition each
        assert {len(s) for s in runs[name].values()} == {3} and set(runs[name]) == {"pp32", "tg8"}
    order = [line.split()[2].rstrip(":") for line in proc.stderr.splitlines()
             if line.startswith("round ")]  # fmt: skip
    per_round = len(setups)
    assert order[:per_round] != order[per_round : 2 * per_round]  # the order rotates
    measured = {r["knob"]: r for r in result["records"]}
    assert set(measured) | set(result["skipped"]) == set(TUNED)
    assert {"cpu.pinning", "cpu.hugetlb_weights", "cpu.thp_weights", "cpu.flash_attn"} <= set(
        measured
    ), result["skipped"]
    for record in measured.values():
        assert record["source"].startswith("llmhost tune on ")
        assert all(m["n"] == 3 and m["low"] <= m["ratio"] <= m["high"] for m in record["metrics"])
    assert Path(result["evidence"]) == Path(env["LLMHOST_STATE_DIR"]) / "evidence.json"
    assert (out / Path(result["plot"]).name).exists() if result["plot"] else result["plot_skipped"]
    assert len(list(out.glob("tune-*.json"))) == 1

    report = json.loads(llmhost("doctor", "--json", env=env).stdout)
    basis = " ".join(r["basis"] for r in report["plan"]["recommendations"])
    assert basis.count("llmhost tune on ") >= len(measured) - 1, basis
    shipped_only = json.loads(
        llmhost("doctor", "--json", env={**env, "LLMHOST_STATE_DIR": str(out / "none")}).stdout
    )
    assert "llmhost tune on " not in json.dumps(shipped_only["plan"]["recommendations"])
