"""A Hugging Face Hub endpoint on 127.0.0.1, as much of it as `huggingface_hub` uses to download:
model info, the file tree, and resolve URLs with Range. Point HF_ENDPOINT at `url`."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    tags: dict[str, str] = field(default_factory=dict)  # revision name -> commit
    gated_token: str | None = None  # set: requests need `Authorization: Bearer <token>`
    wrong_sha: set[str] = field(default_factory=set)  # files whose advertised sha256 is wrong
    cut_once: set[str] = field(default_factory=set)  # files whose first GET stops halfway

    def sha(self, name: str) -> str:
        digest = hashlib.sha256(self.files[name]).hexdigest()
        return "f" * 64 if name in self.wrong_sha else digest

    def resolve(self, revision: str) -> str | None:
        if revision == "main":
            return self.commit
        if revision == self.commit or revision in self.tags.values():
            return revision
        return self.tags.get(revision)


class FakeHub:
    def __init__(self, repos: dict[str, Repo]) -> None:
        hub = self
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ routes

    def _serve(self, h: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/.*)?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        match = api or resolve
        if not match:
            return self._error(h, 404, "EntryNotFound", "no such route")
        repo = self.repos.get(match.group(1))
        if repo is None:
            return self._error(h, 401, "RepoNotFound", "Repository Not Found")
        if repo.gated_token and h.headers.get("Authorization") != f"Bearer {repo.gated_token}":
            return self._error(h, 401, "GatedRepo", "Access to model is restricted")
        revision = match.group(3) if api else match.group(2)
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if api and api.group(2) == "revision":
            return self._json(h, self._info(match.group(1), repo, commit), body)
        if api:
            return self._json(h, self._tree(repo), body)
        return self._file(h, repo, commit, resolve.group(3), body)

    def _info(self, repo_id: str, repo: Repo, commit: str) -> dict:
        siblings = [
            {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest(),
             "lfs": {"sha256": repo.sha(name), "size": len(data), "pointerSize": 134}}
            for name, data in repo.files.items()
        ]  # fmt: skip
        return {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                "siblings": siblings}  # fmt: skip

    def _tree(self, repo: Repo) -> list:
        return [
            {"type": "file", "path": name, "size": len(data),
             "oid": hashlib.sha1(data).hexdigest(),
             "lfs": {"oid": repo.sha(name), "size": len(data), "pointerSize": 134}}
            for name, data in repo.files.items()
        ]  # fmt: skip

    def _file(self, h, repo: Repo, commit: str, name: str, body: bool) -> None:
        if name not in repo.files:
            return self._error(h, 404, "EntryNotFound", f"{name} does not exist")
        data, start = repo.files[name], 0
        ranged = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
        h.send_response(206 if ranged else 200)
        h.send_header("X-Repo-Commit", commit)
        h.send_header("ETag", f'"{repo.sha(name)}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if ranged:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        if name in repo.cut_once and not ranged:
            repo.cut_once.discard(name)
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the rest never comes: the client has to resume
            return
        h.wfile.write(data[start:])

    def _json(self, h, payload: object, body: bool) -> None:
        raw = json.dumps(payload).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        if body:
            h.wfile.write(raw)

    def _error(self, h, status: int, code: str, message: str) -> None:
        raw = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(raw)
