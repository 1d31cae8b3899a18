"""`llmhost pull`: a GGUF file or a model directory from the Hugging Face Hub into models_dir.

Through `huggingface_hub` (the `hub` extra): HF_ENDPOINT, HF_TOKEN (gated models), resumed
downloads and progress bars are its own. llmhost adds what a server needs: the revision resolved
to a commit, every file checked against the Hub's sha256, and a record of where it came from.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmhost.errors import LlmhostError
from llmhost.facts.models import PROVENANCE
from llmhost.plan.config import check_value
from llmhost.untrusted import shown

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")  # branch, tag or commit
# What vLLM reads from a model directory. Pickled *.bin/*.pt duplicates and original/
# checkpoints are left on the Hub (often as large as the safetensors again).
DIRECTORY_FILES = (
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
    "*.jinja",
)
HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Pulled:
    """A model in models_dir, as `services.<name>.model` names it."""

    name: str
    repo: str
    revision: str
    commit: str
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256 (checked)
    size_bytes: int = 0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _check_inputs(repo: str, filename: str | None, revision: str, name: str | None) -> None:
    if not REPO_ID.fullmatch(repo):
        raise LlmhostError(
            f"{shown(repo)!r} is not a Hub repository id (owner/name: letters, digits, . _ -)",
            exit_code=2,
        )
    if not REVISION.fullmatch(revision):
        raise LlmhostError(
            f"--revision {shown(revision)!r} is not a branch, tag or commit", exit_code=2
        )
    if filename is not None:
        check_value("FILE", filename, "model")
    if name is not None:
        check_value("--name", name, "model")


def _hub() -> Any:
    """The client's entry points (imported on use: a second to import)."""
    try:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:
        raise LlmhostError(
            "llmhost pull needs huggingface_hub: pip install 'llmhost[hub]'"
        ) from None
    return SimpleNamespace(HfApi=HfApi, hf_hub_download=hf_hub_download,
                           snapshot_download=snapshot_download,
                           disable_progress_bars=disable_progress_bars,
                           enable_progress_bars=enable_progress_bars)  # fmt: skip


def _explain(exc: Exception, repo: str, revision: str) -> LlmhostError:
    """A Hub failure as one sentence with its fix."""
    kind = type(exc).__name__
    if kind == "GatedRepoError":
        return LlmhostError(
            f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token "
            "of that account"
        )
    if kind == "RepositoryNotFoundError":
        return LlmhostError(
            f"no model repository {repo} at {endpoint()} (a private one needs HF_TOKEN)"
        )
    if kind == "RevisionNotFoundError":
        return LlmhostError(f"{repo} has no revision {revision!r}")
    if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return LlmhostError(f"{repo}@{revision}: {str(exc).splitlines()[0]}")
    if kind in ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException",
                "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ProxyError"):  # fmt: skip
        return LlmhostError(
            f"cannot reach the Hub at {endpoint()} ({kind}): offline? On an air-gapped host, "
            "copy the model into models_dir by hand (see `llmhost pull --help`)"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return LlmhostError(
            f"the disk of models_dir filled up while pulling {repo}: free space, then run "
            "llmhost pull again (it resumes the partial download)"
        )
    first = str(exc).splitlines()[0] if str(exc) else kind
    return LlmhostError(f"pulling {repo}@{revision} failed: {first[:300]}")


def _check_space(models: Path, sizes: list[int | None]) -> None:
    """Refuse before downloading what the disk cannot hold (files already there count as 0:
    the client skips or resumes them, so this errs on the generous side)."""
    need = sum(size or 0 for size in sizes)
    free = shutil.disk_usage(models).free
    if need > free:
        raise LlmhostError(
            f"{need / 2**30:.2f} GiB to download and {free / 2**30:.2f} GiB free in {models}: "
            "free space there, or set models_dir to a larger disk"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


Expected = dict[str, tuple[int | None, str | None]]  # file -> (size, sha256 of an LFS file)


def _expected(info: Any) -> Expected:
    """file -> (size, sha256 for LFS files) from the Hub's file list."""
    out = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = lfs.sha256 if lfs is not None else None
        out[sibling.rfilename] = (sibling.size, sha)
    return out


def _verify(
    root: Path, files: list[str], expected: dict[str, tuple[int | None, str | None]]
) -> dict[str, str]:
    """Each downloaded file's sha256, checked against the Hub's where it gives one (LFS)."""
    sums = {}
    for rel in files:
        path = root / rel
        size, want = expected.get(rel, (None, None))
        if size is not None and path.stat().st_size != size:
            raise LlmhostError(
                f"{rel}: {path.stat().st_size} bytes on disk, the Hub says {size}; "
                "run llmhost pull again to resume"
            )
        got = _sha256(path)
        if want and got != want:
            path.unlink()
            raise LlmhostError(
                f"{rel}: sha256 {got[:16]}... is not the Hub's {want[:16]}...; the file was "
                "removed, run llmhost pull again"
            )
        sums[rel] = got
    return sums


def pull(
    repo: str,
    models_dir: str | Path,
    *,
    filename: str | None = None,
    revision: str = "main",
    name: str | None = None,
    quiet: bool = False,
) -> Pulled:
    """Download `filename` of `repo` (a GGUF file: models_dir/<name or filename>), or without it
    the model directory vLLM serves (models_dir/<name or the repo's name>)."""
    _check_inputs(repo, filename, revision, name)
    hub = _hub()
    (hub.disable_progress_bars if quiet else hub.enable_progress_bars)()
    models = Path(models_dir)
    if not models.is_dir():
        raise LlmhostError(f"models_dir {models} does not exist (create it, or set models_dir)")
    try:
        info = hub.HfApi(endpoint=endpoint()).model_info(
            repo, revision=revision, files_metadata=True
        )
        expected = _expected(info)
        commit = info.sha
        if filename is not None:
            if filename not in expected:
                ggufs = sorted(f for f in expected if f.endswith(".gguf"))
                listed = ", ".join(ggufs[:12]) or "none"
                raise LlmhostError(
                    f"{repo}@{revision} has no file {filename}; GGUF files: {listed}"
                )
            target = name or filename
            _check_space(models, [expected[filename][0]])
            got = Path(hub.hf_hub_download(repo, filename, revision=commit, local_dir=models,
                                           endpoint=endpoint()))  # fmt: skip
            if got != models / target:  # --name: the file where the config will name it
                (models / target).parent.mkdir(parents=True, exist_ok=True)
                got.replace(models / target)
            sums = _verify(models, [target], {target: expected[filename]})
            files = {filename: sums[target]}
            size = (models / target).stat().st_size
        else:
            wanted = [f for f in expected if any(fnmatch.fnmatch(f, p) for p in DIRECTORY_FILES)]
            if not any(f.endswith(".safetensors") for f in wanted):
                raise LlmhostError(
                    f"{repo}@{revision} has no *.safetensors weights (vLLM's format); for a GGUF "
                    f"file name it: llmhost pull {repo} FILE.gguf"
                )
            target = name or repo.split("/")[1]
            _check_space(models, [expected[f][0] for f in wanted])
            root = models / target
            hub.snapshot_download(repo, revision=commit, local_dir=root, allow_patterns=wanted,
                                  endpoint=endpoint())  # fmt: skip
            files = _verify(root, wanted, expected)
            size = sum((root / f).stat().st_size for f in wanted)
    except LlmhostError:
        raise
    except Exception as exc:  # the Hub client's errors, by name: one line each
        raise _explain(exc, repo, revision) from None
    pulled = Pulled(target, repo, revision, commit, files, size)
    _record(models, pulled)
    return pulled


def _record(models: Path, pulled: Pulled) -> None:
    path = models / PROVENANCE
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    known[pulled.name] = asdict(pulled)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
