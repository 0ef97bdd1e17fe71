"""A local stand-in of the Hugging Face Hub's model-upload API: the calls HfApi.create_repo and upload_folder make.

POST /api/repos/create (a model repository in the token's namespace, or the one named), POST
/api/models/{repo}/preupload/{revision} (every file uploads "regular": inline in the commit), POST
/api/models/{repo}/commit/{revision} (NDJSON: a header line, then one line per file with its base64 content).
POST /api/validate-yaml checks a model card's front matter as the Hub does (base_model must be a repository id).
The files of every commit are kept in `repos[repo][path]`; the Authorization header of each call in
`authorizations`. Anything else is a 404 as the Hub answers it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import yaml

from tests.local_server import JSONHandler, LocalServer

USER = "tester"
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_PREUPLOAD = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/[^/]+")
_COMMIT = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/[^/]+")


class HubUploadServer(LocalServer):
    def __init__(self):
        super().__init__(UploadHandler)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, str | None] = {}  # the visibility asked for
        self.commits: list[tuple[str, str]] = []  # (repo, summary)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class UploadHandler(JSONHandler):
    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.authorizations.append(self.headers.get("Authorization"))
        if path == "/api/validate-yaml":
            return self._validate(json.loads(body)["content"])
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request.get('organization') or USER}/{request['name']}"
            self.server.repos.setdefault(repo, {})
            self.server.private[repo] = request.get("visibility")
            return self.reply(200, {"url": f"{self.server.endpoint}/{repo}", "name": repo})
        if (match := _PREUPLOAD.fullmatch(path)) and match["repo"] in self.server.repos:
            files = json.loads(body)["files"]
            return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        if (match := _COMMIT.fullmatch(path)) and match["repo"] in self.server.repos:
            return self._commit(match["repo"], body)
        self.reply(404, {"error": "Repository not found"})

    def _validate(self, card: str) -> None:
        """As the Hub checks a model card: YAML front matter, and base_model a repository id, not a path."""
        if not card.startswith("---\n"):
            return self.reply(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(card.split("---\n")[1])
        except yaml.YAMLError as err:
            return self.reply(400, {"error": f"invalid YAML: {err}"})
        base = meta.get("base_model")
        if base is not None and not _REPO_ID.fullmatch(str(base)):
            return self.reply(400, {"error": f'"base_model" with value "{base}" is not a valid model id'})
        self.reply(200, {"errors": [], "warnings": []})

    def _commit(self, repo: str, body: bytes) -> None:
        summary = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file":
                value = item["value"]
                self.server.repos[repo][value["path"]] = base64.b64decode(value["content"])
        self.server.commits.append((repo, summary))
        oid = hashlib.sha1(body).hexdigest()
        self.reply(200, {"commitUrl": f"{self.server.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                         "success": True})
