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
