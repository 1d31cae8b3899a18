"""Deploy the plan's services as one compose project: preflight, render, up, wait healthy.

Nothing is left half-running. A redeploy keeps the deployment it replaces (compose.yaml.prev,
secrets.env.prev): if the new one is refused by compose or a service never becomes healthy, the
previous one is put back and its services that were healthy come up again; with no previous
deployment, the project is taken down.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llmhost.actions.templates import render
from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts, our_labels
from llmhost.facts.models import read_hf_model, read_model_header
from llmhost.plan.config import Config
from llmhost.plan.planner import Plan, ServicePlan
from llmhost.plan.services import REGISTRY
from llmhost.progress import Progress
from llmhost.state import state_dir
from llmhost.verify.image_checks import refuse_mismatched_cpu_image


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    state: str
    health: str | None
    port: int | None
    restarts: int = 0


def compose_path(project: str) -> Path:
    return state_dir() / project / "compose.yaml"


SECRETS_FILE = "secrets.env"


def render_compose(plan: Plan, config: Config) -> str:
    return render(
        "compose.yaml.j2",
        project=config.project,
        models_dir=str(Path(config.models_dir).resolve()),
        services=plan.services,
        secrets_file=SECRETS_FILE if config.api_key else None,
    )


def secrets_env(plan: Plan, api_key: str) -> str:
    """The env file every service reads its key from; single quotes keep `$` literal."""
    names = sorted({s.api_key_env for s in plan.services})
    return "".join(f"{name}='{api_key}'\n" for name in names)


def write_secrets(plan: Plan, config: Config) -> Path | None:
    """The key in a 0600 file of a 0700 directory, written without ever being world-readable."""
    path = compose_path(config.project).with_name(SECRETS_FILE)
    if not config.api_key:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_private(path, secrets_env(plan, config.api_key).encode())
    return path


def write_private(dest: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` through a 0600 temporary file, give it `mode`, then rename it into place:
    never readable by others on the way, never half-written."""
    tmp = dest.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    tmp.replace(dest)


def compose(project: str, *args: str, capture: bool = True, timeout: float = 600) -> str:
    """Run `docker compose -p PROJECT -f FILE ARGS`; failures become one clear error."""
    cmd = ["docker", "compose", "-p", project, "-f", str(compose_path(project)), *args]
    try:
        proc = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LlmhostError("the docker CLI is not installed") from None
    except subprocess.TimeoutExpired:
        raise LlmhostError(f"`docker compose {args[0]}` took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr or proc.stdout or "").splitlines() if x.strip()]
        raise LlmhostError(
            f"docker compose {args[0]} failed: {lines[-1] if lines else 'no output'}"
        )
    return proc.stdout or ""


def _port_busy(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def preflight(plan: Plan, config: Config, facts: HostFacts, *, allow_no_hugepages: bool) -> None:
    """Refuse, with one sentence each, whatever would make `compose up` fail or half-start."""
    c = facts.containers
    if not c.engine_reachable:
        raise LlmhostError(f"Docker engine not reachable: {c.engine_error}")
    if not c.compose_version:
        raise LlmhostError(f"docker compose v2 is missing ({c.compose_error})")
    refuse_mismatched_cpu_image(plan, facts)
    ours = {x.service for x in c.containers if x.project == config.project and x.state == "running"}
    for svc in plan.services:
        if not any(svc.image in i.tags for i in c.images):
            raise LlmhostError(
                f"image {svc.image} is missing: run `llmhost build --profile {svc.profile}`"
            )
        _check_model(svc, config)
        if svc.name not in ours and _port_busy(svc.bind_address, svc.port):
            raise LlmhostError(
                f"port {svc.bind_address}:{svc.port} for {svc.name} is taken by another program: "
                f"free it or set services.{svc.name}.port in llmhost.yaml"
            )
        if svc.gpu and c.nvidia_container_cli_error:
            raise LlmhostError(
                f"GPU containers cannot start: nvidia-container-cli info failed "
                f"({c.nvidia_container_cli_error}): ansible-playbook site.yml --tags "
                "nvidia_container_toolkit"
            )
    _check_hugepages(plan, facts, ours, allow_no_hugepages)


def _check_model(svc: ServicePlan, config: Config) -> None:
    if not svc.model:
        raise LlmhostError(f"no model configured for {svc.name}: set services.{svc.name}.model")
    path = Path(config.models_dir) / svc.model
    if REGISTRY[svc.name].model_kind == "hf":
        read_hf_model(path)  # raises: not a directory, no config.json, no safetensors
        return
    read_model_header(path)  # raises "does not exist" / "not a GGUF file"


def _check_hugepages(plan: Plan, facts: HostFacts, running: set[str], allow: bool) -> None:
    need = plan.hugepages.pages
    if need == 0 or "llama-cpu" in running or allow:
        return
    pool = facts.memory.pool(plan.hugepages.page_kb)
    free = pool.available if pool else 0
    if free < need:
        raise LlmhostError(
            f"llama-cpu needs {need} free 2 MiB hugepages and {free} are free: run "
            f"`sysctl -w vm.nr_hugepages={(pool.total if pool else 0) + need - free}` "
            "(or ansible-playbook site.yml --tags hugepages), or deploy with --no-hugepages"
        )


PREVIOUS = ".prev"  # the replaced deployment's files: compose.yaml.prev, secrets.env.prev


@dataclass(frozen=True)
class Previous:
    """The deployment a redeploy replaces: the services of it that were healthy."""

    project: str
    healthy: tuple[str, ...]


def project_files(project: str) -> list[Path]:
    """What a deployment is on disk: its compose file and the env file with the key."""
    path = compose_path(project)
    return [path, path.with_name(SECRETS_FILE)]


def keep_previous(project: str) -> Previous | None:
    """Copy the current deployment's files aside (mode kept), noting which of its services are
    healthy; None when there is no deployment yet."""
    if not compose_path(project).exists():
        return None
    healthy = tuple(
        s.service for s in service_states(project) if s.state == "running" and s.health == "healthy"
    )
    previous = Previous(project, healthy)
    for path in project_files(project):
        kept = path.with_name(path.name + PREVIOUS)
        kept.unlink(missing_ok=True)
        if path.exists():
            write_private(kept, path.read_bytes(), path.stat().st_mode & 0o777)
    return previous


def put_back_files(project: str, previous: Previous | None) -> None:
    """The previous deployment's files in place again; none when there was none."""
    for path in project_files(project):
        kept = path.with_name(path.name + PREVIOUS)
        if previous is not None and kept.exists():
            write_private(path, kept.read_bytes(), kept.stat().st_mode & 0o777)
        else:
            path.unlink(missing_ok=True)


def restore_previous(previous: Previous, timeout_s: float, progress: Progress) -> None:
    """Put the kept files back and bring their healthy services up again."""
    put_back_files(previous.project, previous)
    progress(f"restoring the previous deployment: {', '.join(previous.healthy)}")
    compose(previous.project, "up", "-d", "--remove-orphans", *previous.healthy)
    wait_healthy(previous.project, list(previous.healthy), timeout_s, progress)


def write_compose(plan: Plan, config: Config) -> Path:
    path = compose_path(config.project)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secrets(plan, config)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_compose(plan, config))
    tmp.replace(path)
    return path


def service_states(project: str) -> list[ServiceState]:
    """Containers of the project as the engine sees them now."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=10)
        boxes = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
    except DockerException as exc:
        raise LlmhostError(f"Docker engine not reachable: {str(exc).splitlines()[0]}") from None
    states = []
    for box in boxes:
        state = box.attrs.get("State", {})
        labels = box.labels
        port = labels.get(our_labels.PORT)
        states.append(
            ServiceState(
                service=labels.get("com.docker.compose.service", box.name),
                container=box.name,
                state=state.get("Status", "unknown"),
                health=(state.get("Health") or {}).get("Status"),
                port=int(port) if port and port.isdigit() else None,
                restarts=int(box.attrs.get("RestartCount") or 0),
            )
        )
    return sorted(states, key=lambda s: s.service)


def logs_tail(project: str, service: str, lines: int = 20) -> str:
    try:
        return compose(project, "logs", "--no-color", "--tail", str(lines), service)
    except LlmhostError as exc:
        return str(exc)


def _crashed(state: ServiceState) -> bool:
    return state.state in ("exited", "dead", "restarting") or state.restarts > 0


def wait_healthy(
    project: str, services: list[str], timeout_s: float, progress: Progress, poll_s: float = 2.0
) -> None:
    """Poll health until every service is healthy; on time-out show logs and raise."""
    start = time.monotonic()
    last_report = ""
    while True:
        states = {s.service: s for s in service_states(project)}
        pending = [n for n in services if (states.get(n) and states[n].health) != "healthy"]
        crashed = [n for n in pending if n in states and _crashed(states[n])]
        elapsed = time.monotonic() - start
        report = ", ".join(
            f"{n}: {states[n].health or states[n].state}" if n in states else f"{n}: absent"
            for n in services
        )
        if report != last_report:
            progress(f"  [{elapsed:5.0f}s] {report}")
            last_report = report
        if not pending:
            return
        if crashed or elapsed > timeout_s:
            name = (crashed or pending)[0]
            progress(f"--- last log lines of {name} ---\n{logs_tail(project, name).rstrip()}")
            why = "exited" if crashed else f"was not healthy after {timeout_s:.0f} s"
            raise LlmhostError(f"{name} {why} (logs above)")
        time.sleep(poll_s)


def up(
    plan: Plan,
    config: Config,
    facts: HostFacts,
    *,
    progress: Progress,
    timeout_s: float = 600,
    allow_no_hugepages: bool = False,
) -> Path:
    """Preflight, render, `compose up -d`, wait healthy; take everything down on failure."""
    if not plan.services:
        raise LlmhostError(f"profile {plan.profile} has no services")
    preflight(plan, config, facts, allow_no_hugepages=allow_no_hugepages)
    previous = keep_previous(config.project)
    path = write_compose(plan, config)
    progress(f"compose file: {path}")
    try:
        compose(config.project, "config", "--quiet")
    except LlmhostError as exc:
        put_back_files(config.project, previous)  # nothing was started: nothing else to undo
        raise LlmhostError(f"{exc}; nothing was changed") from None
    names = [s.name for s in plan.services]
    try:
        compose(config.project, "up", "-d", "--remove-orphans", *names)
        wait_healthy(config.project, names, timeout_s, progress)
        if config.api_key:
            for svc in plan.services:
                refuse_unauthenticated(svc)
            progress("  API key enforced: a request without it gets 401 from every service")
    except BaseException as exc:
        outcome = _recover(config.project, previous, timeout_s, progress)
        if isinstance(exc, LlmhostError):
            raise LlmhostError(f"{exc}; {outcome}") from None
        raise
    return path


def _recover(project: str, previous: Previous | None, timeout_s: float, progress: Progress) -> str:
    """After a failed start: the previous deployment's healthy services back, else nothing left
    running. Says which, for the error line."""
    if previous is not None and previous.healthy:
        try:
            restore_previous(previous, timeout_s, progress)
            return f"the previous deployment was restored ({', '.join(previous.healthy)} healthy)"
        except LlmhostError as again:
            progress(f"restoring the previous deployment failed: {again}")
    try:
        down(project)
    except LlmhostError as again:
        return f"taking the project down failed too ({again})"
    return "the project was taken down"


def refuse_unauthenticated(svc: ServicePlan, timeout_s: float = 10) -> None:
    """A request without the key must get 401: a server that answers anyway is taken down."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if svc.bind_address in ("0.0.0.0", "::") else svc.bind_address
    url = f"http://{host}:{svc.port}/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError as exc:
        raise LlmhostError(f"{svc.name}: could not check its API key at {url} ({exc})") from None
    if status != 401:
        raise LlmhostError(
            f"{svc.name} answered a request without the API key with {status}, not 401: "
            "the key is not in effect"
        )


def down(project: str) -> None:
    """Stop and remove the project's containers; a project never deployed is not an error."""
    if not compose_path(project).exists():
        return
    compose(project, "down", "--remove-orphans", "--timeout", "20")
