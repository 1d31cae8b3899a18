"""`pip install .` (README's first command) must ship the templates and data the CLI reads."""

import subprocess
import sys
import zipfile


def test_wheel_carries_templates_and_floors(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("llmhost-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "compose.yaml.j2",
        "llama-cpu.Dockerfile.j2",
        "llama-cuda.Dockerfile.j2",
        "vllm.Dockerfile.j2",
        "_dockerfile.j2",
        "host/grub-llmhost.cfg.j2",
    ):
        assert f"llmhost/_templates/{name}" in names, name
    assert "llmhost/data/floors.toml" in names
    assert "llmhost/data/evidence.json" in names
    assert any(n.endswith("entry_points.txt") for n in names)


# What an installed llmhost may not need: numpy (via gguf) took most of the target's pip install,
# and the docker SDK (requests, urllib3) a third of every `plan` and `doctor`.
BLOCK = "import sys\nfor name in {names}: sys.modules[name] = None  # importing it fails\n"


def _run_without(names: tuple[str, ...], body: str) -> subprocess.CompletedProcess:
    code = BLOCK.format(names=names) + body
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_selftest_models_need_neither_gguf_nor_numpy(tmp_path):
    body = (
        "from pathlib import Path\nfrom llmhost.verify.selftest import write_models\n"
        f"models = write_models(Path({str(tmp_path)!r}))\n"
        "print(sorted(p.stat().st_size > 0 for p in models.values()))"
    )
    done = _run_without(("gguf", "numpy"), body)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True, True]"


def test_plan_and_doctor_import_neither_docker_nor_the_checks_they_do_not_run():
    from tests.support import ZEN4_SNAPSHOT

    body = (
        "from llmhost.cli.main import cli\n"
        "for args in (['plan'], ['plan', '--json'], ['doctor', '--json']):\n"
        "    try:\n"
        f"        cli.main([*args, '--from', {str(ZEN4_SNAPSHOT)!r}], standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, 1), (args, exc.code)\n"
        "    assert 'docker' not in sys.modules and 'requests' not in sys.modules, args\n"
        "    assert args[0] == 'doctor' or 'llmhost.verify.doctor' not in sys.modules, args\n"
        "print('clean')\n"
    )
    done = _run_without(("gguf", "numpy"), body)
    assert done.returncode == 0 and done.stdout.strip().endswith("clean"), done.stderr
