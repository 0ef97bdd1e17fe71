"""A local stand-in of the Hugging Face Hub's dataset API: the four calls `datasets.load_dataset(id)` makes.

HEAD/GET /datasets/{id}/resolve/{revision}/{file} (a file, with X-Repo-Commit and ETag), GET
/api/datasets/{id}/revision/{revision} (the repository's info and files) and GET /api/datasets/{id}/tree/
{revision}/{folder} (a folder listing). Everything else, and any repository but the ones served, is a 404 as the
Hub answers it. Point HF_ENDPOINT at `endpoint` in a fresh process (huggingface_hub reads it at import).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from tests.local_server import JSONHandler, LocalServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>.+)")
_INFO = re.compile(r"/api/datasets/(?P<repo>[^/]+/[^/]+)/revision/[^/]+")
_TREE = re.compile(r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/[^/]+/?(?P<folder>.*)")


class HubServer(LocalServer):
    """Serves each {repo id: local folder} in `repos` as a Hub dataset repository at one fixed commit."""

    def __init__(self, repos: dict[str, Path]):
        super().__init__(HubHandler)
        self.repos = repos

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(JSONHandler):
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        for pattern, answer in ((_RESOLVE, self._file), (_INFO, self._info), (_TREE, self._tree)):
            if (match := pattern.fullmatch(path)) and match["repo"] in self.server.repos:
                return answer(self.server.repos[match["repo"]], match)
        self._bytes(404, b"", {"X-Error-Code": "RepositoryNotFound"})

    def _file(self, root: Path, match: re.Match) -> None:
        file = root / match["file"]
        if not file.is_file():
            return self._bytes(404, b"", {"X-Error-Code": "EntryNotFound"})
        data = file.read_bytes()
        self._bytes(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    def _info(self, root: Path, match: re.Match) -> None:
        files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
        self.reply(200, {"id": match["repo"], "sha": COMMIT, "private": False, "disabled": False, "gated": False,
                         "tags": [], "siblings": [{"rfilename": f} for f in files]})  # fmt: skip

    def _tree(self, root: Path, match: re.Match) -> None:
        folder = root / match["folder"]
        entries = folder.rglob("*") if "recursive=true" in self.path.lower() else folder.iterdir()
        listing = []
        for entry in sorted(entries):
            item = {"path": str(entry.relative_to(root))}
            if entry.is_file():
                oid = hashlib.sha1(entry.read_bytes()).hexdigest()
                item |= {"type": "file", "size": entry.stat().st_size, "oid": oid}
            else:
                item |= {"type": "directory", "oid": "0" * 40}
            listing.append(item)
        data = json.dumps(listing).encode()
        self._bytes(200, data, {"Content-Type": "application/json"})

    def _bytes(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
