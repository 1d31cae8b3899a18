"""Security floors: the data file, dpkg-style version ordering, verdicts on each side of every
floor (upstream and distribution versions), and the build gate."""

import json

import pytest

from llmhost.errors import LlmhostError
from llmhost.facts import our_labels
from llmhost.facts.versions import normalize_upstream, version_key, version_problem
from llmhost.verify.floors import (
    HOST_SCOPES,
    State,
    build_gate,
    check,
    compare_versions,
    engine_scopes,
    fixed_upstream,
    llama_build_number,
    load_floors,
    main,
    parse_version,
    required_floor,
    role_defaults,
)
from tests.support import REPO

FIREWALLD = frozenset({"firewalld"})


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.17.8", "1.17.10", -1),
        ("1.2.10", "1.2.8", 1),
        ("1.4.0-rc.3", "1.4.0", -1),
        ("1.4.0-rc.2", "1.4.0-rc.3", -1),
        ("1.4.0-rc.3", "1.3.3", 1),
        ("v0.33.0", "0.33.0", 0),
        ("0.10.1.1", "0.10.1", 1),
        ("1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1+deb12u2", -1),
        ("1.6.20~ds1-1+deb12u3", "1.6.20~ds1-1+deb12u2", 1),
        ("1.6.20~ds1", "1.6.20", -1),  # dpkg: ~ sorts before the end
        ("20.10.24+dfsg1", "20.10.24", 1),
        ("20.10.24+dfsg1-1+deb12u1+b6", "20.10.24+dfsg1-1+deb12u1", 1),
        ("1:1.0", "2.0", 1),
        ("1.3.3-0ubuntu1~24.04.2", "1.3.3-0ubuntu1", -1),
    ],
)
def test_compare_versions(a, b, expected):
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


# PEP 440 (dev < a < b < rc < release < post) and SemVer/runc pre-releases, next to Debian's
# own spellings, which keep dpkg's reading: (lower, higher).
ORDERED = [
    ("0.32.0rc1", "0.32.0"),
    ("0.32.0.dev5", "0.32.0"),
    ("0.32.0a1", "0.32.0"),
    ("0.32.0b2", "0.32.0"),
    ("0.32.0.dev5", "0.32.0a1"),
    ("0.32.0a1", "0.32.0a2"),
    ("0.32.0a2", "0.32.0b1"),
    ("0.32.0b2", "0.32.0rc1"),
    ("0.32.0rc1", "0.32.0rc2"),
    ("0.32.0rc2", "0.32.0rc10"),
    ("0.32.0rc1.dev3", "0.32.0rc1"),
    ("0.32.0rc1", "0.32.0rc1.post1"),
    ("0.31.9", "0.32.0.dev0"),
    ("0.32.0", "0.32.0.post1"),
    ("0.32.0.post1", "0.32.0.post2"),
    ("0.32.0.post1", "0.32.1"),
    ("0.32.0.post1.dev2", "0.32.0.post1"),
    ("0.32.0", "0.32.0.post1.dev2"),
    ("0.32.0-alpha.1", "0.32.0-beta.1"),
    ("0.32.0-beta.11", "0.32.0-rc.1"),
    ("1.4.0-rc.2", "1.4.0"),
    ("1.4.0rc2", "1.4.0"),
    ("1.4.0-rc.2", "1.4.0-rc.3"),
    ("1.4.0rc2", "1.4.0-rc.3"),
    ("1.3.3", "1.4.0-rc.1"),
    ("v0.33.0rc1", "v0.33.0"),
    ("1.4.0~rc3-1", "1.4.0-1"),  # Debian spells the pre-release with ~ itself
    ("1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1+deb12u2"),
    ("20.10.24+dfsg1-1+deb12u1", "20.10.24+dfsg1-1+deb12u1+b6"),
    ("26.1.5+dfsg1-9", "26.1.5+dfsg1-9+b9"),
    ("20.10.24+dfsg1-1+deb12u1", "26.1.5+dfsg1-9+b9"),
    ("1:20.10.24", "2:1.0"),
]
EQUAL = [
    ("1.4.0-rc.2", "1.4.0rc2"),
    ("0.32.0-rc.1", "0.32.0rc1"),
    ("0.32.0RC1", "0.32.0rc1"),
    ("0.32.0c1", "0.32.0rc1"),
    ("0.32.0.alpha.1", "0.32.0a1"),
    ("0.32.0-dev5", "0.32.0.dev5"),
    ("0.32.0-post1", "0.32.0.post1"),
    ("v28.3.3", "28.3.3"),
]


@pytest.mark.parametrize(("lower", "higher"), ORDERED)
def test_pre_dev_and_post_releases_sort_by_pep440(lower, higher):
    assert compare_versions(lower, higher) == -1
    assert compare_versions(higher, lower) == 1


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_spellings_of_one_version_are_equal(a, b):
    assert compare_versions(a, b) == 0


def test_sorting_a_mixed_list():
    versions = ["0.32.0", "0.32.0.post1", "0.32.0rc1", "0.32.0.dev5", "0.32.0b2", "0.32.0a1"]
    assert sorted(versions, key=version_key) == [
        "0.32.0.dev5", "0.32.0a1", "0.32.0b2", "0.32.0rc1", "0.32.0", "0.32.0.post1",
    ]  # fmt: skip
    assert normalize_upstream("1.4.0-rc.2") == "1.4.0~rc2"
    assert normalize_upstream("20.10.24+dfsg1") == "20.10.24+dfsg1"  # a repack is no marker


@pytest.mark.parametrize(
    ("component", "version"),
    [
        ("vllm", "0.32.0rc1"),
        ("vllm", "0.32.0.dev5"),
        ("vllm", "0.32.0a1"),
        ("vllm", "0.32.0b2"),
        ("runc", "1.4.0-rc.2"),
        ("runc", "1.4.0rc2"),
        ("runc", "1.3.3-rc.1"),
        ("containerd", "2.2.0-rc.1"),
        ("nvidia-container-toolkit", "1.19.1-rc.1"),
        ("docker-engine", "28.5.2-rc.1"),
    ],
)
def test_a_pre_release_never_meets_the_floor_of_its_release(component, version):
    assert check(component, version).state is State.VULNERABLE, check(component, version)


def test_a_post_release_meets_the_floor_of_its_release():
    assert check("vllm", "0.32.0.post1").state is State.OK
    assert check("runc", "1.3.3.post1").state is State.OK


NOT_VERSIONS = ["latest", "nightly", "main", "master", "0c1e57098", "3f1a9c2e4b5d", "", "  "]


@pytest.mark.parametrize("tag", NOT_VERSIONS)
@pytest.mark.parametrize("component", ["vllm", "runc", "docker-engine", "containerd"])
def test_tags_that_are_not_versions_are_refused(component, tag):
    verdict = check(component, tag)
    assert verdict.state is State.REFUSED
    assert "not a version" in verdict.describe()
    assert fixed_upstream(tag, ("0.1.0",)) is None  # never "newer than every fix"


@pytest.mark.parametrize("tag", ["latest", "master", "0c1e57098", ""])
def test_llama_tags_are_refused_but_local_trees_stay_unverified(tag):
    assert check("llama-cpp", tag).state is State.REFUSED
    assert check("llama-cpp", "local-0c1e57098").state is State.UNKNOWN


def test_version_problem_names_the_kind_of_tag():
    assert version_problem("latest") == "'latest' is a moving tag, not a version"
    assert version_problem("0c1e57098") == "'0c1e57098' is a commit, not a version"
    assert version_problem("") == "'' is empty, not a version"
    assert "is not a version" in (version_problem("stable-2024") or "")
    for version in ("0.33.0", "v0.33.0", "1.4.0-rc.3", "1:1.6.20~ds1-1+deb12u3", "28.3.3"):
        assert version_problem(version) is None, version


@pytest.mark.parametrize(
    ("service", "tag", "key"),
    [
        ("vllm-gpu", "latest", "images.vllm_version"),
        ("vllm-gpu", "nightly", "images.vllm_version"),
        ("vllm-gpu", "", "images.vllm_version"),
        ("llama-cpu", "main", "images.llama_ref"),
        ("llama-gpu", "0c1e57098", "images.llama_ref"),
    ],
)
def test_build_gate_refuses_tags_even_with_allow_below_floor(service, tag, key):
    for allow in (False, True):
        with pytest.raises(LlmhostError) as exc:
            build_gate(service, tag, allow_below_floor=allow)
        message = str(exc.value)
        assert message.startswith(f"{key}: ") and "not a version" in message
        assert "\n" not in message and exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "package", "revision", "upstream", "distro"),
    [
        ("1.1.5+ds1-1+deb12u1", "1.1.5+ds1", "1+deb12u1", "1.1.5", True),
        ("1.1.5+ds1", "1.1.5+ds1", None, "1.1.5", True),  # what the engine reports
        ("20.10.24+dfsg1", "20.10.24+dfsg1", None, "20.10.24", True),
        ("1.6.20~ds1-1+deb12u3", "1.6.20~ds1", "1+deb12u3", "1.6.20", True),
        ("1.3.3-0ubuntu1~24.04.2", "1.3.3", "0ubuntu1~24.04.2", "1.3.3", True),
        ("1.4.0-rc.3", "1.4.0-rc.3", None, "1.4.0-rc.3", False),  # -rc.3 is no revision
        ("v1.7.29", "1.7.29", None, "1.7.29", False),
    ],
)
def test_parse_version(text, package, revision, upstream, distro):
    v = parse_version(text)
    assert (v.package, v.revision, v.upstream, v.is_distribution) == (
        package,
        revision,
        upstream,
        distro,
    )


def test_llama_build_numbers():
    assert llama_build_number("b10864") == 10864
    assert llama_build_number("local-0c1e57098") is None
    assert llama_build_number("llama-cpp-python-0.3.36-vendor-0c1e57098") is None
    assert fixed_upstream("b8146", ("b8146",), "build") is True
    assert fixed_upstream("b8145", ("b8146",), "build") is False
    assert fixed_upstream("local-abc", ("b8146",), "build") is None


def test_floor_is_what_the_advisories_demand():
    floors = load_floors()
    for comp in floors.components.values():
        assert comp.floor == required_floor(comp.applicable(), comp.scheme), comp.name
        for advisory in comp.advisories:
            assert advisory.ids and advisory.fixed and advisory.summary
            assert advisory.source.startswith("https://"), advisory.ids
    assert floors["llama-cpp"].floor_for(frozenset({"rpc-server"})) == ("b11865",)
    assert floors["llama-cpp"].pin == "b10864"
    assert floors["vllm"].pin == "0.33.0"


# Every floor from both sides: (component, version, expected state, text in the description).
CASES = [
    ("nvidia-container-toolkit", "1.16.1", State.VULNERABLE, "CVE-2024-0132"),
    ("nvidia-container-toolkit", "1.17.3", State.VULNERABLE, "CVE-2025-23359"),
    ("nvidia-container-toolkit", "1.17.7", State.VULNERABLE, "CVE-2025-23266"),
    ("nvidia-container-toolkit", "1.17.8", State.VULNERABLE, "CVE-2026-24260"),
    ("nvidia-container-toolkit", "1.18.2", State.VULNERABLE, "CVE-2026-24260"),
    ("nvidia-container-toolkit", "1.19.0", State.VULNERABLE, "CVE-2026-24260"),
    ("nvidia-container-toolkit", "1.19.1", State.OK, ">= floor 1.19.1"),
    ("nvidia-container-toolkit", "1.20.0", State.OK, ""),
    ("nvidia-container-toolkit", "1.19.1-1", State.OK, ""),  # the .deb's version
    ("runc", "1.2.7", State.VULNERABLE, "CVE-2025-31133"),
    ("runc", "1.2.8", State.OK, ""),
    ("runc", "1.3.2", State.VULNERABLE, "CVE-2025-52881"),
    ("runc", "1.3.3", State.OK, ""),
    ("runc", "1.4.0-rc.2", State.VULNERABLE, ""),
    ("runc", "1.4.0-rc.3", State.OK, ""),
    ("runc", "1.4.0", State.OK, ""),
    ("runc", "1.1.15", State.VULNERABLE, "fixed in 1.2.8 / 1.3.3 / 1.4.0-rc.3"),
    ("runc", "1.1.5+ds1", State.VULNERABLE, "carries no fix up to 1.1.5+ds1-1+deb12u1"),
    ("runc", "1.1.5+ds1-1+deb12u1", State.VULNERABLE, "Debian 12 (bookworm)"),
    ("runc", "1.1.5+ds1-1+deb12u2", State.UNKNOWN, "newer than 1.1.5+ds1-1+deb12u1"),
    ("runc", "1.1.12-0ubuntu3", State.UNKNOWN, "no record of a backport"),
    ("runc", "1.3.3-0ubuntu1~24.04.2", State.OK, ""),
    ("containerd", "1.7.28", State.VULNERABLE, "CVE-2024-25621"),
    ("containerd", "1.7.29", State.OK, ""),
    ("containerd", "2.0.6", State.VULNERABLE, "CVE-2025-64329"),
    ("containerd", "2.0.7", State.OK, ""),
    ("containerd", "2.1.4", State.VULNERABLE, ""),
    ("containerd", "2.1.5", State.OK, ""),
    ("containerd", "2.2.0", State.OK, ""),
    ("containerd", "1.6.39", State.VULNERABLE, ""),
    ("containerd", "1.6.20~ds1-1+deb12u1", State.VULNERABLE, "fixed it in 1.6.20~ds1-1+deb12u2"),
    ("containerd", "1.6.20~ds1-1+deb12u2", State.VULNERABLE, "CVE-2025-64329"),
    ("containerd", "1.6.20~ds1-1+deb12u3", State.PATCHED, "patched by the distribution"),
    ("containerd", "1.6.20~ds1", State.UNKNOWN, "does not report the package revision"),
    ("docker-engine", "28.5.1", State.VULNERABLE, "CVE-2025-52565"),
    ("docker-engine", "28.5.2", State.OK, ""),
    ("docker-engine", "29.0.0", State.OK, ""),
    ("docker-engine", "20.10.24+dfsg1", State.UNKNOWN, "no record of a backport"),
    ("docker-engine", "27.5.1", State.VULNERABLE, "moby/moby#49325 (fixed in 28.0.0)"),
    ("docker-engine", "28.0.0", State.VULNERABLE, "CVE-2025-52881"),
    ("llama-cpp", "b5661", State.VULNERABLE, "CVE-2025-49847"),
    ("llama-cpp", "b7823", State.VULNERABLE, "CVE-2026-33298"),
    ("llama-cpp", "b8145", State.VULNERABLE, "CVE-2026-27940"),
    ("llama-cpp", "b8940", State.VULNERABLE, "CVE-2026-21869"),
    ("llama-cpp", "b9060", State.VULNERABLE, "CVE-2026-43631"),
    ("llama-cpp", "b9061", State.OK, ""),
    ("llama-cpp", "b10864", State.OK, ""),
    ("llama-cpp", "local-0c1e57098", State.UNKNOWN, "no build number"),
    ("vllm", "0.21.0", State.VULNERABLE, "CVE-2026-48746"),
    ("vllm", "0.22.0", State.VULNERABLE, "CVE-2026-115911"),
    ("vllm", "0.29.0", State.VULNERABLE, "CVE-2026-105757"),
    ("vllm", "0.31.0", State.VULNERABLE, "CVE-2026-115911"),
    ("vllm", "0.32.0", State.OK, ""),
    ("vllm", "v0.33.0", State.OK, ""),
]


@pytest.mark.parametrize(("component", "version", "state", "text"), CASES)
def test_each_side_of_every_floor(component, version, state, text):
    verdict = check(component, version)
    assert verdict.state is state, verdict.describe()
    assert text in verdict.describe()


def test_rpc_advisories_apply_only_when_rpc_server_is_built():
    assert check("llama-cpp", "b10864").state is State.OK
    rpc = check("llama-cpp", "b10864", frozenset({"rpc-server"}))
    assert rpc.state is State.VULNERABLE and "CVE-2026-118375" in rpc.describe()
    assert check("llama-cpp", "b11865", frozenset({"rpc-server"})).state is State.OK


def test_build_gate_refuses_below_floor():
    with pytest.raises(LlmhostError, match="below its security floor b9061") as exc:
        build_gate("llama-cpu", "b8000", allow_below_floor=False)
    assert "--allow-below-floor" in str(exc.value)
    with pytest.raises(LlmhostError, match=r"vLLM 0\.29\.0 is below its security floor 0\.32\.0"):
        build_gate("vllm-gpu", "0.29.0", allow_below_floor=False)


def test_build_gate_override_is_recorded():
    labels, warning = build_gate("llama-gpu", "b8000", allow_below_floor=True)
    assert labels[our_labels.FLOOR_STATUS] == "override"
    assert "b8000 < floor b9061" in labels[our_labels.FLOOR_OVERRIDE]
    assert warning and warning.startswith("WARNING")


def test_build_gate_local_tree_is_unverified_not_refused():
    labels, note = build_gate(
        "llama-cpu", "llama-cpp-python-0.3.36-vendor-0c1e57098", allow_below_floor=False
    )
    assert labels == {our_labels.FLOOR_STATUS: "unverified"}
    assert note and "cannot prove" in note
    assert build_gate("llama-cpu", "b10864", allow_below_floor=False) == (
        {our_labels.FLOOR_STATUS: "ok"},
        None,
    )


def test_build_gate_counts_rpc_when_built():
    with pytest.raises(LlmhostError, match="b11865"):
        build_gate("llama-cpu", "b10864", allow_below_floor=False, cmake_flags="-DGGML_RPC=ON")


def test_role_defaults(capsys):
    defaults = role_defaults()
    assert defaults["nvidia_container_toolkit_min_version"] == "1.19.1"
    # The docker role cannot see the host's firewall before it installs: firewalld counts.
    engine = load_floors()["docker-engine"]
    assert defaults["docker_engine_min_version"] == engine.floor_for(HOST_SCOPES)[0] == "28.5.2"
    assert defaults["docker_engine_min_versions"] == ["28.5.2"]
    assert defaults["runc_min_versions"] == ["1.2.8", "1.3.3", "1.4.0-rc.3"]
    assert defaults["llama_cpp_pin"] == "b10864"
    assert main(["--ansible"]) == 0
    assert json.loads(capsys.readouterr().out) == defaults


def test_ansible_role_defaults_carry_the_same_floors():
    """The nvidia_container_toolkit role's default is the floors file's value, not a copy that
    can drift: `python -m llmhost.verify.floors --ansible` is what a role would look up."""
    import json
    import subprocess
    import sys

    import yaml

    floors = json.loads(
        subprocess.run(
            [sys.executable, "-m", "llmhost.verify.floors", "--ansible"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    defaults = REPO / "roles/nvidia_container_toolkit/defaults/main.yml"
    role = yaml.safe_load(defaults.read_text())
    key = "nvidia_container_toolkit_min_version"
    assert role[key] == floors[key]


# The engine's own advisories (judged_by=None: runc's escapes are the runc check's), without and
# with firewalld: (version, firewalld, expected state, text in the description).
ENGINE_CASES = [
    ("20.10.24", False, State.VULNERABLE, "moby/moby#49325 (fixed in 28.0.0)"),
    ("20.10.24", True, State.VULNERABLE, "moby/moby#49325"),  # predates CVE-2025-54388
    ("27.5.1", False, State.VULNERABLE, "moby/moby#49325"),
    ("27.5.1", True, State.VULNERABLE, "moby/moby#49325"),
    ("28.0.0", False, State.OK, ">= floor 28.0.0"),
    ("28.0.0", True, State.OK, ""),
    ("28.1.1", True, State.OK, ""),  # CVE-2025-54388 came with 28.2.0
    ("28.2.0", False, State.OK, ""),
    ("28.2.0", True, State.VULNERABLE, "CVE-2025-54388 (fixed in 28.3.3)"),
    ("28.3.2", False, State.OK, ""),
    ("28.3.2", True, State.VULNERABLE, "CVE-2025-54388 (fixed in 28.3.3)"),
    ("28.3.3-rc.1", True, State.VULNERABLE, "CVE-2025-54388"),
    ("28.3.3", False, State.OK, ""),
    ("28.3.3", True, State.OK, ""),
    ("29.0.0", True, State.OK, ""),
    ("20.10.24+dfsg1-1+deb12u1", False, State.UNKNOWN, "no record of a backport"),
    ("20.10.24+dfsg1-1+deb12u1", True, State.UNKNOWN, "moby/moby#49325 (distribution build"),
    ("26.1.5+dfsg1-9+b9", False, State.UNKNOWN, "upstream 26.1.5, which predates the fix"),
    ("26.1.5+dfsg1-9+b9", True, State.UNKNOWN, "moby/moby#49325"),
    ("20.10.24+dfsg1", True, State.UNKNOWN, "moby/moby#49325"),
]


@pytest.mark.parametrize(("version", "firewalld", "state", "text"), ENGINE_CASES)
def test_docker_engine_advisories(version, firewalld, state, text):
    verdict = check("docker-engine", version, FIREWALLD if firewalld else frozenset(), None)
    assert verdict.state is state, verdict.describe()
    assert text in verdict.describe()
    if not firewalld:
        assert "CVE-2025-54388" not in verdict.describe()
    if "dfsg" in version:  # the Debian builds predate CVE-2025-54388: never blamed for it
        assert "CVE-2025-54388" not in verdict.describe()


def test_engine_advisories_facts():
    floors = load_floors()["docker-engine"]
    by_id = {a.ids[0]: a for a in floors.advisories}
    loopback, firewalld = by_id["moby/moby#49325"], by_id["CVE-2025-54388"]
    assert (loopback.fixed, loopback.scope, loopback.judged_by) == (("28.0.0",), None, None)
    assert (firewalld.fixed, firewalld.scope, firewalld.introduced) == (
        ("28.3.3",),
        "firewalld",
        "28.2.0",
    )
    assert "GHSA-x4rx-4gw3-53p4" in firewalld.ids
    # The runc escapes still decide the whole floor, with or without firewalld.
    assert floors.floor == floors.floor_for(FIREWALLD) == ("28.5.2",)


def test_runc_judged_and_own_advisories_split():
    runc_only = check("docker-engine", "28.0.0", judged_by="runc")
    assert runc_only.state is State.VULNERABLE and "moby" not in runc_only.describe()
    own = check("docker-engine", "28.0.0", judged_by=None)
    assert own.state is State.OK and "CVE-2025-52881" not in own.describe()


@pytest.mark.parametrize(
    ("backend", "scopes"),
    [
        ("iptables+firewalld", FIREWALLD),
        ("nftables+firewalld", FIREWALLD),
        ("iptables", frozenset()),
        ("nftables", frozenset()),
        (None, frozenset()),
    ],
)
def test_engine_scopes(backend, scopes):
    assert engine_scopes(backend) == scopes
