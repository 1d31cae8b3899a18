"""Snapshots are untrusted input: crafted tarballs are refused in one line, nothing is written."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.cli.main import cli
from llmhost.cpulist import MAX_CPUS, parse_cpulist
from llmhost.errors import LlmhostError
from llmhost.facts import gather, snapshot_format
from llmhost.facts.snapshot_format import MANIFEST, MAX_MEMBER_BYTES, check_manifest
from llmhost.facts.sources import (
    DOCKER_CALLS,
    DOCKER_INFO_KEYS,
    KNOWN_COMMANDS,
    REDACTED_HOSTNAME,
    CommandOutput,
    LiveSource,
    SnapshotSource,
    _docker_call,
    _docker_sdk_call,
)
from llmhost.untrusted import is_hostname
from tests.support import CPUINFO, ZEN4_SNAPSHOT, FakeEngine, write_host_tree

ONLINE = "sys/devices/system/cpu/online"


def _fixture() -> tuple[dict[str, bytes], dict]:
    with tarfile.open(ZEN4_SNAPSHOT) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    return files, json.loads(files.pop(MANIFEST))


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info


def craft(
    path: Path,
    files: dict[str, bytes | None] | None = None,
    manifest: dict | None = None,
    extra: tuple[tarfile.TarInfo, ...] = (),
) -> Path:
    """The Zen 4 fixture, `files` replaced (None drops one), `manifest` merged, `extra` added."""
    base, base_manifest = _fixture()
    base.update(files or {})
    merged = json.dumps({**base_manifest, **(manifest or {})}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [(MANIFEST, base.pop(MANIFEST, None) or merged), *base.items()]:
            if data is not None:
                tar.addfile(_info(name, len(data)), io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_clear_line(result, text: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert text in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _no_host_config(tmp_path, monkeypatch):
    empty = tmp_path / "llmhost-empty.yaml"
    empty.write_text("")
    monkeypatch.setenv("LLMHOST_CONFIG", str(empty))


# -- CPU ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-4294967295", "CPU 4294967295 is above the 8191"),
        (str(MAX_CPUS), f"CPU {MAX_CPUS} is above"),
        ("0-3,9999:2", "CPU 9999 is above"),
        ("0-x", "not a CPU list"),
        ("1_000", "not a CPU list"),
        ("9" * 5000, "not a CPU list"),
    ],
)
def test_cpulist_refuses_huge_or_malformed(text, message):
    with pytest.raises(LlmhostError) as err:
        parse_cpulist(text, "/sys/devices/system/cpu/online")
    assert str(err.value).startswith("/sys/devices/system/cpu/online holds ")
    assert message in str(err.value) and len(str(err.value)) < 200


def test_cpulist_largest_cpu_is_fine():
    assert parse_cpulist(f"{MAX_CPUS - 2}-{MAX_CPUS - 1}") == (MAX_CPUS - 2, MAX_CPUS - 1)


@pytest.mark.parametrize("command", ["plan", "doctor", "build"])
def test_huge_online_list_is_one_line(tmp_path, command):
    snap = craft(tmp_path / "s.tar.gz", {ONLINE: b"0-4294967295\n"})
    result = run(command, "--from", str(snap))
    assert_one_clear_line(result, "/sys/devices/system/cpu/online holds '0-4294967295'")


def test_huge_cpu_in_cache_list_names_its_file(tmp_path):
    shared = "sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list"
    snap = craft(tmp_path / "s.tar.gz", {shared: b"0-1,4294967295\n"})
    assert_one_clear_line(run("plan", "--from", str(snap)), f"/{shared} holds")


# -- the tarball itself -------------------------------------------------------------------------


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = _info(name, kind=kind)
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_link("proc/meminfo2", tarfile.SYMTYPE, "/etc/shadow"), "is a symbolic link"),
        (_link("proc/meminfo2", tarfile.LNKTYPE, "proc/cpuinfo"), "is a hard link"),
        (_info("dev/sda", kind=tarfile.CHRTYPE), "is a device or FIFO"),
        (_info("proc/fifo", kind=tarfile.FIFOTYPE), "is a device or FIFO"),
        (_info("/etc/cron.d/x"), "absolute or empty name"),
        (_info("../../x"), "climbs out with '..'"),
        (_info("proc/../../x"), "climbs out with '..'"),
        (_info("proc/a\x1b[2Jb"), "control characters"),
        (_info("proc/huge", size=10 * 1024**3), "is 10240 MiB, above the 16 MiB"),
    ],
)
def test_bad_members_are_refused(tmp_path, member, message):
    snap = craft(tmp_path / "s.tar.gz", extra=(member,))
    result = run("plan", "--from", str(snap))
    assert_one_clear_line(result, message)
    assert "\x1b" not in result.output


def test_member_just_over_the_limit(tmp_path):
    snap = craft(tmp_path / "s.tar.gz", {"proc/cpuinfo": b"\0" * (MAX_MEMBER_BYTES + 1)})
    assert_one_clear_line(run("doctor", "--from", str(snap)), "'proc/cpuinfo' is 16 MiB, above")


def test_total_uncompressed_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_format, "MAX_TOTAL_BYTES", 1024 * 1024)
    pad = {f"pad/{i}": b"\0" * 300_000 for i in range(4)}
    snap = craft(tmp_path / "s.tar.gz", pad)
    assert_one_clear_line(run("plan", "--from", str(snap)), "unpacks to more than 1 MiB")


def test_a_pax_header_bomb_is_bounded(tmp_path, monkeypatch):
    """tarfile reads a pax header whole: the stream under it stops at the total."""
    monkeypatch.setattr(snapshot_format, "MAX_TOTAL_BYTES", 1024 * 1024)
    path = tmp_path / "pax.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_info("PaxHeader", 4 * 1024 * 1024, tarfile.XHDTYPE), io.BytesIO(b"\0" * 4**11))
    assert_one_clear_line(run("doctor", "--from", str(path)), "unpacks to more than 1 MiB")


def test_unwritable_snapshot_is_one_line(tmp_path, tree_host):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["snapshot", "-o", str(tmp_path / "file" / "s.tar.gz")])
    assert result.exit_code == 1 and "cannot write snapshot" in result.output
    assert "Traceback" not in result.output


def test_directories_are_fine_and_fixtures_still_read(tmp_path):
    snap = craft(tmp_path / "s.tar.gz", extra=(_info("proc", kind=tarfile.DIRTYPE),))
    assert SnapshotSource(snap).read_text("/proc/cpuinfo")


# -- the manifest -------------------------------------------------------------------------------


def _manifest(**changes) -> dict:
    data = {"format": 1, "created": "2026-01-01T00:00:00Z", "listings": {}, "commands": {}}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "is not a JSON object"),
        (_manifest(created=..., listings=...), "lacks created, listings"),
        (_manifest(colour="red"), "has unknown key(s) colour"),
        (_manifest(created=..., colour="red"), "lacks created; has unknown key(s) colour"),
        (_manifest(format="1"), "format must be an integer (got str)"),
        (_manifest(format=True), "format must be an integer (got bool)"),
        (_manifest(format=2), "is format 2; this llmhost reads format 1"),
        (_manifest(listings=[]), "listings must be an object"),
        (_manifest(listings={"/sys": "cpu0"}), "listings['/sys'] must be a list of names or null"),
        (_manifest(commands={"rm-rf": {"error": None}}), "commands has unknown key 'rm-rf'"),
        (_manifest(commands={"docker-info": {"error": 3}}), "commands['docker-info'] must be"),
        (_manifest(commands={"docker-info": {}}), "commands['docker-info'] must be"),
        (_manifest(hostname="../../etc"), "hostname '../../etc' is not a hostname"),
        (_manifest(redacted=["password"]), "redacted lists 'password'"),
    ],
)
def test_manifest_schema(data, message):
    with pytest.raises(LlmhostError) as err:
        check_manifest(data, "snapshot s.tar.gz", KNOWN_COMMANDS)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_manifest_of_the_shape_written_is_accepted():
    check_manifest(
        _manifest(hostname="vm", machine="x86_64", llmhost_version="0.1.0", redacted=["hostname"]),
        "s",
        KNOWN_COMMANDS,
    )


@pytest.mark.parametrize("text", ["{", "[" * 100_000, '{"format": ' + "9" * 5000 + "}"])
def test_corrupt_manifest_through_the_cli(tmp_path, text):
    snap = craft(tmp_path / "s.tar.gz", {MANIFEST: text.encode()})
    assert_one_clear_line(run("plan", "--from", str(snap)), "has a corrupt manifest")


def test_bad_manifest_through_the_cli(tmp_path):
    snap = craft(tmp_path / "s.tar.gz", manifest={"format": 9, "evil": 1})
    assert_one_clear_line(run("doctor", "--from", str(snap)), "has unknown key(s) evil")


# -- hostnames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostname", [b"../../../tmp/pwned", b"a/b", b"-rf", b"{{ 7 * 7 }}", b"x" * 65, b"host\x00"]
)
def test_hostname_from_a_snapshot_never_becomes_a_path(tmp_path, hostname):
    snap = craft(tmp_path / "s.tar.gz", {"proc/sys/kernel/hostname": hostname + b"\n"})
    result = run("plan", "--from", str(snap))
    assert_one_clear_line(result, "/proc/sys/kernel/hostname holds")
    assert "not a hostname" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["llmhost-empty.yaml", "s.tar.gz"]


@pytest.mark.parametrize("name", ["vm", "zen3-desktop", "gpu01.lab.example.org", "build_host"])
def test_plain_hostnames_pass(name):
    assert is_hostname(name)


# -- what recording keeps -----------------------------------------------------------------------


_BOX = {
    "Id": "c0ffee",
    "Names": ["/llmhost-llama-cpu-1"],
    "Image": "llmhost/llama-cpu:latest",
    "State": "running",
    "Status": "Up 2 minutes (healthy)",
    "Command": "llama-server --api-key secret",
    "Labels": {
        "com.docker.compose.project": "llmhost",
        "com.docker.compose.service": "llama-cpu",
        "com.docker.compose.project.working_dir": "/home/alice/llmhost",
        "io.llmhost.service": "llama-cpu",
    },
}


ENGINE_ROUTES = {
    "/info": {
        "ServerVersion": "27.0.1",
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "CgroupDriver": "systemd",
        "CgroupVersion": "2",
        "Name": "secret-hostname",
        "HttpProxy": "http://user:pw@proxy:3128",
        "DockerRootDir": "/srv/docker",
    },
    "/version": {"Version": "27.0.1", "ApiVersion": "1.46"},
    "/images/json": [],
    "/containers/json": [_BOX],
    "/containers/c0ffee/json": {
        "Id": "c0ffee",
        "Config": {"Hostname": "secret-hostname", "Env": ["K=secret"]},
    },
}


@pytest.fixture
def fake_docker(tmp_path_factory, monkeypatch):
    """A Docker engine on a Unix socket (DOCKER_HOST) that llmhost's facts ask."""
    engine = FakeEngine(tmp_path_factory.mktemp("engine") / "docker.sock", ENGINE_ROUTES)
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    yield engine
    engine.close()


def test_recording_keeps_only_used_docker_info_keys_and_our_containers(fake_docker):
    info = json.loads(_docker_call("docker-info").stdout)
    assert set(info) <= set(DOCKER_INFO_KEYS) and info["ServerVersion"] == "27.0.1"
    out = _docker_call("docker-containers").stdout
    asked = urllib.parse.urlsplit(fake_docker.requests[-1])
    assert asked.path == "/containers/json"
    query = urllib.parse.parse_qs(asked.query)
    assert query["all"] == ["1"]
    assert json.loads(query["filters"][0]) == {"label": ["io.llmhost.service"]}
    for secret in ("secret", "alice", "working_dir"):
        assert secret not in out
    labels = json.loads(out)[0]["Labels"]
    assert labels["io.llmhost.service"] == "llama-cpu"
    assert labels["com.docker.compose.project"] == "llmhost"


@pytest.mark.parametrize("key", sorted(DOCKER_CALLS))
def test_the_docker_sdk_path_reads_what_the_socket_path_reads(fake_docker, key):
    """A tcp/ssh DOCKER_HOST goes through the docker SDK: same queries, same reduced facts."""
    direct = _docker_call(key)
    assert direct.ok, direct.error
    assert _docker_sdk_call(key).stdout == direct.stdout


def test_inspect_keeps_no_secrets_and_errors_are_sentences(fake_docker, monkeypatch):
    out = _docker_call("docker-inspect-llmhost").stdout
    assert json.loads(out)[0]["Id"] == "c0ffee"
    assert "secret" not in out
    fake_docker.routes.pop("/version")
    assert "HTTP 404 no such" in (_docker_call("docker-version").error or "")
    monkeypatch.setenv("DOCKER_HOST", fake_docker.url + ".gone")
    assert _docker_call("docker-info").error == (
        "no Docker socket (the engine is not running or not installed)"
    )


class _TreeHost(LiveSource):
    """A laid-out /proc and /sys tree; Docker is the fake engine, nvidia tools absent."""

    def command(self, key: str) -> CommandOutput:
        if key in DOCKER_CALLS:
            return super().command(key)
        return CommandOutput(error=f"{key} not found on PATH")


@pytest.fixture
def tree_host(tmp_path, monkeypatch, fake_docker):
    cpuinfo = (CPUINFO / "epyc-genoa-2cpu.txt").read_text()
    files = {"/proc/sys/kernel/hostname": "secret-hostname\n"}
    root = write_host_tree(tmp_path / "root", cpuinfo, cores=2, files=files)
    monkeypatch.setattr("llmhost.cli.snapshot.LiveSource", lambda: _TreeHost(str(root)))
    return root


def _members(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_snapshot_is_written_0600_and_can_redact_the_hostname(tmp_path, tree_host):
    plain, redacted = tmp_path / "plain.tar.gz", tmp_path / "redacted.tar.gz"
    old = os.umask(0)
    try:
        assert run("snapshot", "-o", str(plain)).exit_code == 0
        assert run("snapshot", "-o", str(redacted), "--redact-hostname").exit_code == 0
    finally:
        os.umask(old)
    for path in (plain, redacted):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert gather(SnapshotSource(plain)).hostname == "secret-hostname"
    assert gather(SnapshotSource(redacted)).hostname == REDACTED_HOSTNAME
    members = _members(redacted)
    assert all("secret-hostname" not in text for text in members.values())
    manifest = json.loads(members[MANIFEST])
    assert manifest["hostname"] == REDACTED_HOSTNAME and manifest["redacted"] == ["hostname"]
    assert not list(tmp_path.glob("*.part"))


# -- model facts --------------------------------------------------------------------------------

MODEL = "/srv/llmhost/models/m.gguf"
HEADER = {
    "architecture": "llama", "n_layer": 2, "n_embd": 128, "n_head": 4, "n_head_kv": 4,
    "head_dim_k": 32, "head_dim_v": 32, "n_ff": 256, "n_vocab": 260, "context_length": 2048,
    "weights_bytes": 1_000_000, "file_bytes": 1_100_000,
}  # fmt: skip


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"relative/m.gguf": {"kind": "gguf", "facts": HEADER, "error": None}},
         "models has a key that is not an absolute path"),
        ({MODEL: {"kind": "gguf", "facts": HEADER}}, f"models['{MODEL}'] must be"),
        ({MODEL: {"kind": "gguf", "facts": HEADER, "error": "no"}}, "one of facts and error set"),
        ({MODEL: {"kind": "gguf", "facts": None, "error": None}}, "one of facts and error set"),
        ({MODEL: {"kind": "gguf", "facts": [1], "error": None}}, f"models['{MODEL}'] must be"),
    ],
)  # fmt: skip
def test_model_entries_of_another_shape_are_refused(models, message):
    with pytest.raises(LlmhostError) as err:
        check_manifest(_manifest(models=models), "snapshot s.tar.gz", KNOWN_COMMANDS)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({**HEADER, "n_layer": -1}, "n_layer must be a whole number from 0 to 2**50"),
        ({**HEADER, "n_layer": True}, "n_layer must be a whole number"),
        ({**HEADER, "weights_bytes": 2**60}, "weights_bytes must be a whole number"),
        ({**HEADER, "architecture": "x" * 500}, "architecture must be a short string"),
        ({**HEADER, "architecture": "{{ 7 * 7 }}\n"}, "architecture must be a short string"),
        ({k: v for k, v in HEADER.items() if k != "n_head"}, "its recorded facts lack n_head"),
        ({**HEADER, "evil": 1}, "its recorded facts have unknown 'evil'"),
    ],
)  # fmt: skip
def test_model_facts_from_a_snapshot_are_checked_before_the_plan_uses_them(
    tmp_path, facts, message
):
    """A crafted header never reaches the arithmetic: the plan refuses the service in one line."""
    entry = {"kind": "gguf", "facts": facts, "error": None}
    snap = craft(tmp_path / "s.tar.gz", manifest={"models": {MODEL: entry}})
    config = tmp_path / "llmhost.yaml"
    config.write_text("models_dir: /srv/llmhost/models\nservices:\n  llama-cpu: {model: m.gguf}\n")
    result = run("--config", str(config), "plan", "--profile", "cpu", "--from", str(snap))
    assert_one_clear_line(result, f"llama-cpu: model {MODEL}: {message}")


def test_model_facts_of_the_written_shape_plan(tmp_path):
    """The same header, well formed: facts a plan can size a pool from."""
    from llmhost.facts.models import ModelHeader, gather_models

    entry = {"kind": "gguf", "facts": HEADER, "error": None}
    source = SnapshotSource(craft(tmp_path / "s.tar.gz", manifest={"models": {MODEL: entry}}))
    (found,) = gather_models(source, {MODEL: "gguf"}).values()
    assert found == ModelHeader(path=MODEL, **HEADER)
    (other,) = gather_models(source, {MODEL: "hf"}).values()
    assert "was not captured in this snapshot" in other.error  # type: ignore[union-attr]
