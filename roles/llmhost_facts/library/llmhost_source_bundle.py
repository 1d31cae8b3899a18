#!/usr/bin/python
"""Ansible module (run on the controller): a deterministic tarball of an llmhost checkout.

The same sources always give the same bytes and the same fingerprint, so the target is
reinstalled only when the code really changed, whatever the files' timestamps say.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_source_bundle
short_description: Deterministic source bundle and fingerprint of an llmhost checkout
description:
  - Packs C(pyproject.toml), C(README.md), C(llmhost/) and C(templates/) of a checkout into a
    gzip tarball whose bytes depend only on file names and contents.
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
      - Controller directory of wheels (llmhost's dependencies and its build backend) packed
        into the bundle under C(wheelhouse/), for targets that install with no package index.
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
files:
  description: Number of packed files.
  type: int
  returned: always
"""

INCLUDE = ("pyproject.toml", "README.md", "llmhost", "templates")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp", ".partial", ".swp")
# Zip (used by editable wheels) cannot store times before 1980; any fixed time will do.
FIXED_MTIME = 315532800


def source_files(src: str, wheelhouse: str = "") -> list[tuple[str, str]]:
    """(path in the bundle, path on the controller), sorted, so directory order never matters."""
    found = []
    for top in INCLUDE:
        path = os.path.join(src, top)
        if os.path.isfile(path):
            found.append(top)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            # A symlinked directory (llmhost/_templates -> ../templates) is packed as the link.
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            dirs[:] = [d for d in dirs if d not in links]
            for name in [*files, *links]:
                if not name.endswith(SKIP_SUFFIXES):
                    found.append(os.path.relpath(os.path.join(root, name), src))
    packed = [(rel, os.path.join(src, rel)) for rel in found]
    if wheelhouse:
        wheels = sorted(n for n in os.listdir(wheelhouse) if n.endswith((".whl", ".tar.gz")))
        packed += [(f"wheelhouse/{n}", os.path.join(wheelhouse, n)) for n in wheels]
    return sorted(packed)


def fingerprint(files: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0")
        if os.path.islink(path):
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        digest.update(b"\0")
    return digest.hexdigest()


def read_version(src: str) -> str:
    with open(os.path.join(src, "llmhost", "__init__.py"), encoding="utf-8") as handle:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', handle.read(), re.M)
    return match.group(1) if match else "unknown"


def write_bundle(files: list[tuple[str, str]], bundle: str) -> None:
    partial = bundle + ".partial"
    with open(partial, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, source in files:
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid = FIXED_MTIME, 0, 0
            info.uname = info.gname = "root"
            if os.path.islink(source):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(source), 0o777
                tar.addfile(info)
                continue
            with open(source, "rb") as handle:
                data = handle.read()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
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
    digest = fingerprint(files)
    os.makedirs(dest, exist_ok=True)
    bundle = os.path.join(dest, f"llmhost-src-{digest[:16]}.tar.gz")
    # A controller-side cache, written in check mode too: it is not state of any managed host.
    if not os.path.exists(bundle):
        write_bundle(files, bundle)
    module.exit_json(changed=False, fingerprint=digest, version=read_version(src), bundle=bundle,
                     files=len(files))


if __name__ == "__main__":
    main()
