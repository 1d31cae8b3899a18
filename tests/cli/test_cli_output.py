"""Output for people: NO_COLOR, --color, wrapping to the terminal, --config after the command,
shell completion, and a real terminal (util-linux `script`)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from llmhost.cli import layout
from llmhost.cli import plan as plan_command
from llmhost.cli.main import COMMANDS, cli
from llmhost.cli.render import render_doctor
from llmhost.verdict import Status
from llmhost.verify.doctor import Report
from llmhost.verify.doctor.result import Result
from tests.support import H100_SNAPSHOT, REPO, ZEN4_SNAPSHOT

ROOT = REPO
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG_FIX = (
    "install Docker's own packages (docker-ce >= 28.5.2, containerd.io with runc >= 1.3.3): "
    "ansible-playbook site.yml --tags docker; sudo nvidia-smi -i 0 -mig 0 && sudo reboot"
)


@pytest.fixture(autouse=True)
def _no_host_config(tmp_path, monkeypatch):
    empty = tmp_path / "llmhost-empty.yaml"
    empty.write_text("")
    monkeypatch.setenv("LLMHOST_CONFIG", str(empty))
    monkeypatch.delenv("NO_COLOR", raising=False)


def run(*args, env=None, color=False):
    return CliRunner().invoke(cli, list(args), env=env, color=color, catch_exceptions=False)


# ---------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("args", "env", "coloured"),
    [
        ((), {}, True),
        ((), {"NO_COLOR": "1"}, False),
        ((), {"NO_COLOR": ""}, True),  # set but empty: no effect (no-color.org)
        (("--no-color",), {}, False),
        (("--color",), {"NO_COLOR": "1"}, True),  # an explicit flag wins
    ],
)
def test_no_color_and_the_color_flags(args, env, coloured):
    """color=True: CliRunner keeps escapes as a terminal would; NO_COLOR must still drop them."""
    for argv in ([*args, "doctor"], ["doctor", *args]):  # before or after the command
        result = run(*argv, "--from", str(ZEN4_SNAPSHOT), env=env, color=True)
        assert result.exit_code in (0, 1), result.output
        assert bool(ANSI.search(result.output)) is coloured, argv


def test_no_colour_in_a_pipe_without_flags():
    assert not ANSI.search(run("doctor", "--from", str(ZEN4_SNAPSHOT)).output)


# ---------------------------------------------------------------- layout


def test_wrap_hangs_and_never_splits_flags():
    text = "-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON 1.6.20~ds1-1+deb12u3"
    lines = layout.wrap(text, 40, "  CPU build ", " " * 12)
    assert len(lines) > 1 and lines[0].startswith("  CPU build -DGGML_AVX512=ON")
    assert all(line.startswith(" " * 12) and line[12] != " " for line in lines[1:])
    assert " ".join(lines).split()[2:] == text.split()  # no word split or lost
    assert layout.wrap(text, None, "> ", "  ") == [f"> {text}"]  # not a terminal: one line


def test_fix_fits_on_one_line_or_each_command_stands_alone():
    assert layout.fix_lines("llmhost build --profile cpu", 70, "      ") == [
        "      fix: llmhost build --profile cpu"
    ]
    lines = layout.fix_lines(LONG_FIX, 60, "      ")
    assert lines == [
        "      fix:",
        "        install Docker's own packages (docker-ce >= 28.5.2, containerd.io with runc "
        ">= 1.3.3): ansible-playbook site.yml --tags docker",
        "        sudo nvidia-smi -i 0 -mig 0 && sudo reboot",
    ]
    assert layout.fix_lines(LONG_FIX, None, "  ") == [f"  fix: {LONG_FIX}"]


@pytest.mark.parametrize(
    ("fix", "parts"),
    [
        ("a; b", ["a", "b"]),
        ("echo 'x; y'; b", ["echo 'x; y'", "b"]),
        ('sh -c "a; b"', ['sh -c "a; b"']),
        ("run `a; b` (then c; d); e", ["run `a; b` (then c; d)", "e"]),
        ("llmhost's fix; it's done", ["llmhost's fix", "it's done"]),  # apostrophes, not quotes
    ],
)
def test_fix_parts_split_only_between_commands(fix, parts):
    assert layout._split_commands(fix) == parts


def test_condense():
    assert layout.condense("short", 20) == "short"
    assert layout.condense("First one. Then a much longer second sentence.", 20) == "First one."
    cut = layout.condense("applied, measured nil: CPU build with the plan's ISA flags", 30)
    assert cut.endswith(" …") and len(cut) <= 30 and "measured nil" in cut


def test_render_doctor_wraps_details_and_keeps_fixes_whole(capsys):
    detail = "no CPUs isolated (plan: 1-12); " + "the scheduler runs anything anywhere " * 4
    report = Report(
        (
            Result("a", "Short", Status.OK, "fine"),
            Result("b", "A rather long title for a check", Status.OK, detail),
            Result("c", "CPU isolation", Status.WARN, detail, LONG_FIX),
            Result("d", "Images", Status.FAIL, "not built", "llmhost build --profile cpu"),
        ),
        None,
    )
    render_doctor(report, "llmhost doctor — testhost (snapshot), profile cpu, " + "x " * 20, 60)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("llmhost doctor") and lines[1].startswith("  x x")  # hanging
    assert any(line.startswith("[✓] Short") and line.endswith("fine") for line in lines)
    assert "      fix: llmhost build --profile cpu" in lines
    fix_at = lines.index("      fix:")
    assert lines[fix_at + 1] == "        " + LONG_FIX.split("; ")[0]
    assert lines[fix_at + 2] == "        " + LONG_FIX.split("; ")[1]
    long = [line for line in lines if len(line) > 60]
    assert long == [lines[fix_at + 1]]  # the one command longer than the screen, unbroken
    joined = " ".join(line.strip() for line in lines)
    assert " ".join(detail.split()) in joined  # wrapping loses no word


def test_plan_wraps_to_the_terminal_and_condenses_evidence(monkeypatch, tmp_path):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("profile: cpu\ninference_cores: 8\nhugepages: {gib: 1}\n")
    monkeypatch.setattr(plan_command, "terminal_width", lambda: 70)
    text = run("plan", "--config", str(cfg), "--from", str(H100_SNAPSHOT)).output
    assert all(len(line) <= 70 for line in text.splitlines()), text
    assert re.search(r"\n {19}-DGGML_", text)  # the CPU build flags hang under their field
    assert "  evidence         " in text
    assert "recommended: CPU pinning + hugetlb weights …\n" in text  # cut to 70 columns
    data = json.loads(
        run("plan", "--json", "--config", str(cfg), "--from", str(H100_SNAPSHOT)).output
    )
    assert all(r["text"] and r["text"] not in text for r in data["recommendations"])


# ---------------------------------------------------------------- --config after the command


def test_config_before_or_after_the_command_is_the_same(tmp_path):
    cfg = tmp_path / "one-core.yaml"
    cfg.write_text("inference_cores: 1\n")
    snap = str(ZEN4_SNAPSHOT)
    for command in ("doctor", "plan"):
        before = run("--config", str(cfg), command, "--json", "--from", snap)
        after = run(command, "--json", "--from", snap, "--config", str(cfg))
        assert before.exit_code == after.exit_code
        assert before.output == after.output
    same_twice = run("--config", str(cfg), "plan", "--config", str(cfg), "--from", snap)
    assert same_twice.exit_code == 0


def test_config_after_the_command_is_read(tmp_path):
    cfg = tmp_path / "two-cores.yaml"
    cfg.write_text("inference_cores: 2\n")  # the Zen 4 VM has 2 cores: one stays for the OS
    result = run("plan", "--from", str(ZEN4_SNAPSHOT), "--config", str(cfg))
    assert result.exit_code == 1 and "set inference_cores: 1" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{a}", "doctor", "--config", "{b}"],
        ["doctor", "--config", "{a}", "--config", "{b}"],
        ["--config", "{a}", "--config", "{b}", "doctor"],
    ],
)
def test_two_different_configs_are_a_usage_error(tmp_path, argv):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("")
    b.write_text("")
    args = [arg.format(a=a, b=b) for arg in argv]
    result = run(*args, "--from", str(ZEN4_SNAPSHOT))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"llmhost: --config given twice with different paths: {a} and {b}"
    ]


def test_every_command_takes_config_and_color():
    for name in COMMANDS:
        help_text = run(name, "--help").output
        assert "--config PATH" in help_text and "--color / --no-color" in help_text, name


# ---------------------------------------------------------------- completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell):
    result = run("completion", shell)
    assert result.exit_code == 0
    assert "_LLMHOST_COMPLETE" in result.output and "llmhost" in result.output


def test_completion_of_an_unknown_shell_is_a_usage_error():
    result = run("completion", "tcsh")
    assert result.exit_code == 2 and "'tcsh' is not one of" in result.output


def test_completion_answers_through_the_console_entry_point():
    """What the bash script runs: `_LLMHOST_COMPLETE=bash_complete llmhost` (main())."""
    env = {**os.environ, "_LLMHOST_COMPLETE": "bash_complete", "COMP_CWORD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli.main"],
        env={**env, "COMP_WORDS": "llmhost comp"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["plain,completion"], done.stderr


def test_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    for name in COMMANDS:
        assert f"llmhost {name}" in block, name


# ---------------------------------------------------------------- a real terminal


def _doctor_in_a_terminal(env: dict[str, str]) -> list[str]:
    command = shlex.join(
        [sys.executable, "-m", "llmhost.cli.main", "doctor", "--from", str(ZEN4_SNAPSHOT)]
    )
    done = subprocess.run(
        ["script", "-qc", command, "/dev/null"],
        env={**os.environ, "COLUMNS": "70", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout
    return done.stdout.replace("\r", "").splitlines()


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script not installed")
def test_doctor_on_a_70_column_terminal():
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    plain = _doctor_in_a_terminal({**env, "NO_COLOR": "1"})
    coloured = _doctor_in_a_terminal(env)
    assert not any("\x1b" in line for line in plain)
    assert any(ANSI.search(line) for line in coloured)
    assert [ANSI.sub("", line) for line in coloured] == plain

    report = json.loads(run("doctor", "--json", "--from", str(ZEN4_SNAPSHOT)).output)
    fixes = [c["remediation"] for c in report["checks"] if c["remediation"]]
    assert fixes and any(len(f) > 70 for f in fixes)  # the fixture exercises the long form
    stripped = [line.strip() for line in plain]
    allowed = set()
    for fix in fixes:  # each fix whole on one line, or each of its commands on its own
        if f"fix: {fix}" not in stripped:
            parts = layout._split_commands(fix)
            assert all(part in stripped for part in parts), fix
            allowed.update(parts)
    too_long = [line for line in plain if len(line) > 70 and line.strip() not in allowed]
    assert not too_long, "\n".join(too_long)
