#!/usr/bin/python
"""Ansible module (run on the controller): llmhost's wheel, built from a checkout, in a
deterministic tarball with the wheelhouse.

The same sources always give the same bytes and the same fingerprint, so the target is
reinstalled only when the code really changed, whatever the files' timestamps say. The wheel is
written here (a pure-Python zip and its metadata), so the target needs no build backend and
installs compiled bytecode: on a slow target the editable install it replaces built llmhost
with setuptools first (about 4 minutes of a fleet guest's first run under TCG).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import re
import tarfile
import zipfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_source_bundle
short_description: llmhost's wheel from a checkout, bundled with a wheelhouse, and a fingerprint
description:
  - Builds llmhost's wheel (py3-none-any) from C(pyproject.toml) and C(llmhost/) of a checkout
    (linked folders such as C(llmhost/_templates) packed as their files) and packs it, with the
    wheelhouse, into a gzip tarball whose bytes depend only on file names and contents.
  - Meant for C(delegate_to: localhost); it writes only under O(dest) on the controller.
options:
  src:
    description: Root of the llmhost checkout.
    type: path
    required: true
  dest:
    description: Directory on the controller that receives C(llmhost-src-<fingerprint>.tar.gz).
    type: path
    required: true
  wheelhouse:
    description:
      - Controller directory of wheels (llmhost's dependencies) packed into the bundle under
        C(wheelhouse/), for targets that install with no package index. A wheel of llmhost
        itself there is left out: the bundle carries the one built from O(src).
    type: path
    default: ""
author: llmhost
"""

RETURN = r"""
fingerprint:
  description: sha256 over every packed path and its content.
  type: str
  returned: always
version:
  description: C(__version__) of the checkout's llmhost package.
  type: str
  returned: always
bundle:
  description: Path of the tarball on the controller.
  type: str
  returned: always
wheel:
  description: File name of llmhost's wheel at the top of the tarball (version
    C(<__version__>+<fingerprint[:12]>)).
  type: str
  returned: always
files:
  description: Number of packed files.
  type: int
  returned: always
"""

INCLUDE = ("pyproject.toml", "README.md", "llmhost")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp", ".partial", ".swp")
# Zip cannot store times before 1980; any fixed time will do.
FIXED_MTIME = 315532800
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def source_files(src: str, wheelhouse: str = "") -> list[tuple[str, str]]:
    """(path in the bundle, path on the controller), sorted, so directory order never matters.
    Linked folders (llmhost/_templates -> ../templates) are followed: the wheel holds files."""
    found = []
    for top in INCLUDE:
        path = os.path.join(src, top)
        if os.path.isfile(path):
            found.append(top)
            continue
        for root, dirs, files in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for name in files:
                if not name.endswith(SKIP_SUFFIXES):
                    found.append(os.path.relpath(os.path.join(root, name), src))
    packed = [(rel, os.path.join(src, rel)) for rel in found]
    if wheelhouse:
        wheels = sorted(n for n in os.listdir(wheelhouse)
                        if n.endswith((".whl", ".tar.gz")) and not n.startswith("llmhost-"))
        packed += [(f"wheelhouse/{n}", os.path.join(wheelhouse, n)) for n in wheels]
    return sorted(packed)


def fingerprint(files: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0")
        digest.update(_read(path) + b"\0")
    return digest.hexdigest()


def read_version(src: str) -> str:
    with open(os.path.join(src, "llmhost", "__init__.py"), encoding="utf-8") as handle:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', handle.read(), re.M)
    return match.group(1) if match else "unknown"


def read_project(src: str) -> dict:
    """[project] of pyproject.toml (tomllib: the controller's Python is 3.11 or newer)."""
    import tomllib

    with open(os.path.join(src, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def wheel_metadata(project: dict, version: str) -> dict[str, bytes]:
    """The .dist-info files besides RECORD: what pip needs to install and to resolve deps."""
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {version}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    scripts = project.get("scripts", {})
    entry_points = "[console_scripts]\n" + "".join(
        f"{k} = {v}\n" for k, v in sorted(scripts.items()))
    wheel = "Wheel-Version: 1.0\nGenerator: llmhost_source_bundle\nRoot-Is-Purelib: true\n" \
            "Tag: py3-none-any\n"
    return {"METADATA": ("\n".join(lines) + "\n").encode(), "WHEEL": wheel.encode(),
            "entry_points.txt": entry_points.encode()}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _digest(data: bytes) -> str:
    """RECORD's hash: urlsafe base64 of the sha256, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(src: str, files: list[tuple[str, str]], version: str) -> tuple[str, bytes]:
    """(file name, bytes) of llmhost's wheel: the package's files and its .dist-info. `version`
    carries the fingerprint as a local label (0.1.0+1a2b...), so pip replaces an install of other
    sources even when __version__ did not change."""
    project = read_project(src)
    name = re.sub(r"[-_.]+", "_", project["name"])
    info = f"{name}-{version}.dist-info"
    entries = [(rel, _read(path)) for rel, path in files if rel.startswith("llmhost/")]
    entries += [(f"{info}/{n}", data) for n, data in wheel_metadata(project, version).items()]
    record = "".join(f"{rel},sha256={_digest(data)},{len(data)}\n" for rel, data in entries)
    record += f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as whl:
        for rel, data in entries:
            item = zipfile.ZipInfo(rel, ZIP_TIME)
            item.external_attr, item.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            whl.writestr(item, data)
    return f"{name}-{version}-py3-none-any.whl", out.getvalue()


def write_bundle(members: list[tuple[str, bytes | str]], bundle: str) -> None:
    """members: (name in the tarball, bytes or a controller path), in order."""
    partial = bundle + ".partial"
    with open(partial, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, source in members:
            if isinstance(source, str):
                source = _read(source)
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid = FIXED_MTIME, 0, 0
            info.uname = info.gname = "root"
            info.size, info.mode = len(source), 0o644
            tar.addfile(info, io.BytesIO(source))
    os.replace(partial, bundle)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"src": {"type": "path", "required": True},
                       "dest": {"type": "path", "required": True},
                       "wheelhouse": {"type": "path", "default": ""}},
        supports_check_mode=True,
    )
    src, dest, wheelhouse = (module.params[k] for k in ("src", "dest", "wheelhouse"))
    if not os.path.isfile(os.path.join(src, "llmhost", "__init__.py")):
        module.fail_json(msg=f"{src} is not an llmhost checkout (no llmhost/__init__.py): set "
                             "llmhost_facts_source_dir to the repository root")
    if wheelhouse and not os.path.isdir(wheelhouse):
        module.fail_json(msg=f"llmhost_facts_wheelhouse {wheelhouse} is not a directory on the "
                             "controller (make one with: pip wheel --wheel-dir DIR . setuptools)")
    files = source_files(src, wheelhouse)
    digest, version = fingerprint(files), read_version(src)
    os.makedirs(dest, exist_ok=True)
    bundle = os.path.join(dest, f"llmhost-{digest[:16]}.tar.gz")
    try:
        wheel, data = build_wheel(src, files, f"{version}+{digest[:12]}")
    except (ImportError, KeyError, OSError, ValueError) as err:
        module.fail_json(msg=f"cannot build llmhost's wheel from {src}: {err}")
    # A controller-side cache, written in check mode too: it is not state of any managed host.
    if not os.path.exists(bundle):
        wheels = [(rel, path) for rel, path in files if rel.startswith("wheelhouse/")]
        write_bundle([(wheel, data), *wheels], bundle)
    module.exit_json(changed=False, fingerprint=digest, version=version, bundle=bundle,
                     wheel=wheel, files=len(files))


if __name__ == "__main__":
    main()
