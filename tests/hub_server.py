"""A small Hub-protocol HTTP server on 127.0.0.1 for testing push and pull.

It speaks the parts of the Hugging Face Hub protocol that ``huggingface_hub``'s
``HfApi`` and ``hf_hub_download`` use for a model repository: repo creation,
repo info, the tree listing, preupload, the git-LFS batch API with basic
transfers, the ndjson commit (honouring ``parentCommit``), tags, YAML
validation, and ``resolve`` with the headers the client needs (``X-Repo-Commit``,
``ETag`` / ``X-Linked-Etag``, ``X-Linked-Size``, ``X-Error-Code``).

Repositories are kept in memory as a list of immutable commits. The server
counts every request and every LFS object it receives, so tests can check
what a client transferred. It runs in a background thread with
``ThreadingHTTPServer`` (a real socket, real HTTP).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub"]

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with these bytes (what the Hub reports as a file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    data: bytes
    lfs: bool
    served: bytes | None = None  # what `resolve` sends instead of `data` (a damaged transfer)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class _Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """A Hub-protocol server on 127.0.0.1 (``with FakeHub() as hub: hub.endpoint``)."""

    def __init__(self, token: str | None = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, _Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.lfs_uploads: list[str] = []
        self.clients: set[str] = set()
        self.lock = threading.Lock()
        self._interleaved: tuple[str, dict[str, bytes | None]] | None = None
        self.cuts: Counter[tuple[str, str]] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The server's base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state, for tests -----------------------------------------------------------------

    def commit(self, repo_id: str, files: dict[str, bytes | None], *, branch: str = "main") -> str:
        """Commit files directly (None deletes); returns the new commit id. For crafting repos."""
        with self.lock:
            return self._commit_locked(repo_id, files, branch)

    def interleave(self, repo_id: str, files: dict[str, bytes | None]) -> None:
        """Land a commit of ``files`` on main just before the next commit request is handled.

        This is another client's push arriving while a push is between reading
        the head and committing: the race ``parentCommit`` exists to catch.
        """
        self._interleaved = (repo_id, files)

    def _commit_locked(self, repo_id: str, files: dict[str, bytes | None], branch: str) -> str:
        repo = self.repos.get(repo_id) or self._create(repo_id, private=False)
        parent = repo.refs[branch]
        tree = dict(repo.commits[parent])
        for path, data in files.items():
            if data is None:
                tree.pop(path, None)
            else:
                tree[path] = _File(data, lfs=path.endswith(".safetensors"))
        return self._store_commit(repo, branch, parent, tree)

    def tamper(self, repo_id: str, path: str, served: bytes, revision: str = "main") -> None:
        """Serve ``served`` for ``path`` from now on while every header (ETag, X-Linked-Etag,
        the tree's LFS oid) still describes the committed bytes: a damaged transfer."""
        with self.lock:
            repo = self.repos[repo_id]
            commit = repo.resolve(revision)
            assert commit is not None
            repo.commits[commit][path].served = served

    def cut(self, repo_id: str, path: str, times: int) -> None:
        """Drop the connection halfway through each of the next ``times`` downloads of
        ``path`` (the headers promise the whole file): a network failing mid-transfer."""
        with self.lock:
            self.cuts[repo_id, path] = times

    def head(self, repo_id: str, branch: str = "main") -> str:
        """The commit a branch points at."""
        return self.repos[repo_id].refs[branch]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file at a revision, by path."""
        repo = self.repos[repo_id]
        commit = repo.resolve(revision)
        assert commit is not None
        return {p: f.data for p, f in repo.commits[commit].items()}

    def _create(self, repo_id: str, *, private: bool) -> _Repo:
        repo = _Repo(repo_id, private)
        first = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
        repo.commits[first] = {".gitattributes": _File(_GITATTRIBUTES, lfs=False)}
        repo.refs["main"] = first
        self.repos[repo_id] = repo
        return repo

    @staticmethod
    def _store_commit(repo: _Repo, branch: str, parent: str, tree: dict[str, _File]) -> str:
        listing = "\n".join(f"{p} {f.etag}" for p, f in sorted(tree.items()))
        oid = hashlib.sha1(f"{parent}\n{listing}\n{len(repo.commits)}".encode()).hexdigest()
        repo.commits[oid] = tree
        repo.refs[branch] = oid
        return oid


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_API = rf"^/api/models/{_REPO}"


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: with Nagle's algorithm on a kept-alive
        # connection the body waits for the client's delayed ACK, 40 ms per request
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        # -- plumbing ---------------------------------------------------------------------

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            *,
            head: bool = False,
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
            self._send(
                status,
                json.dumps(value).encode(),
                {"Content-Type": "application/json", **(headers or {})},
            )

        def _authorized(self) -> bool:
            return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, repo_id: str) -> _Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                raise _HubError(404, "Repository not found", "RepoNotFound")
            return repo

        def _commit_of(self, repo: _Repo, revision: str) -> str:
            commit = repo.resolve(unquote(revision))
            if commit is None:
                raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return commit

        def _dispatch(self, method: str) -> None:
            hub.clients.add(self.client_address[0])
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            for verb, pattern, name in _ROUTES:
                match = re.match(pattern, path)
                if verb == method and match:
                    hub.requests[name] += 1
                    try:
                        with hub.lock:
                            getattr(self, name)(query=query, **match.groupdict())
                    except _HubError as exc:
                        headers = {"X-Error-Code": exc.code} if exc.code else {}
                        headers["X-Error-Message"] = exc.message
                        if method == "HEAD":
                            self._send(exc.status, headers=headers, head=True)
                        else:
                            self._json(exc.status, {"error": exc.message, **exc.extra}, headers)
                    return
            hub.requests["unknown"] += 1
            self._json(404, {"error": f"no route for {method} {path}"})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        # -- routes -----------------------------------------------------------------------

        def create_repo(self, query: dict[str, list[str]]) -> None:
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")
            payload = json.loads(self._body())
            repo_id = f"{payload['organization'] or 'user'}/{payload['name']}"
            url = f"{hub.endpoint}/{repo_id}"
            if repo_id in hub.repos:
                raise _HubError(409, "You already created this model repo", url=url)
            hub._create(repo_id, private=payload.get("visibility") == "private")
            self._json(200, {"url": url, "name": repo_id})

        def repo_info(self, query: dict[str, list[str]], repo: str, revision: str = "main") -> None:
            r = self._repo(repo)
            commit = self._commit_of(r, revision)
            siblings = [{"rfilename": p} for p in sorted(r.commits[commit])]
            self._json(
                200,
                {"id": repo, "sha": commit, "private": r.private, "siblings": siblings},
            )

        def tree(
            self, query: dict[str, list[str]], repo: str, revision: str, path: str | None
        ) -> None:
            r = self._repo(repo)
            files = r.commits[self._commit_of(r, revision)]
            prefix = unquote(path or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            under = {p: f for p, f in files.items() if not prefix or p.startswith(prefix + "/")}
            if prefix and not under:
                raise _HubError(404, f"{prefix} does not exist", "EntryNotFound")
            items: list[dict[str, Any]] = []
            folders: set[str] = set()
            for p, f in sorted(under.items()):
                rest = p[len(prefix) + 1 :] if prefix else p
                if "/" in rest and not recursive:
                    folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                    continue
                item: dict[str, Any] = {
                    "type": "file",
                    "path": p,
                    "size": len(f.data),
                    "oid": git_blob_sha1(f.data),
                }
                if f.lfs:
                    item["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
                items.append(item)
            items += [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(folders)]
            self._json(200, items)

        def preupload(self, query: dict[str, list[str]], repo: str, revision: str) -> None:
            r = self._repo(repo)
            files = r.commits[self._commit_of(r, revision)]
            answer = []
            for f in json.loads(self._body())["files"]:
                lfs = f["path"].endswith(".safetensors")
                current = files.get(f["path"])
                oid = None if current is None else current.etag
                mode = "lfs" if lfs else "regular"
                answer.append(
                    {"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid}
                )
            self._json(200, {"files": answer})

        def lfs_batch(self, query: dict[str, list[str]], repo: str) -> None:
            self._repo(repo)
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")
            objects = []
            for o in json.loads(self._body())["objects"]:
                item: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    item["actions"] = {"upload": {"href": f"{hub.endpoint}/_lfs/{o['oid']}"}}
                objects.append(item)
            self._json(200, {"transfer": "basic", "objects": objects})

        def lfs_put(self, query: dict[str, list[str]], oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise _HubError(400, "content does not match its oid")
            hub.lfs[oid] = data
            hub.lfs_uploads.append(oid)
            self._send(200)

        def validate_yaml(self, query: dict[str, list[str]]) -> None:
            self._body()
            self._json(200, {"errors": [], "warnings": []})

        def commit(self, query: dict[str, list[str]], repo: str, revision: str) -> None:
            if hub._interleaved is not None:
                other, hub._interleaved = hub._interleaved, None
                hub._commit_locked(other[0], other[1], "main")
            r = self._repo(repo)
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")
            branch = unquote(revision)
            if branch not in r.refs:
                raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = r.refs[branch]
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            header = lines[0]["value"]
            if header.get("parentCommit") not in (None, parent):
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(r.commits[parent])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    tree[value["path"]] = _File(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        raise _HubError(422, f"LFS object {value['oid']} was not uploaded")
                    tree[value["path"]] = _File(hub.lfs[value["oid"]], lfs=True)
                elif key == "deletedFile":
                    tree.pop(value["path"], None)
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    tree = {p: f for p, f in tree.items() if not p.startswith(folder)}
            oid = FakeHub._store_commit(r, branch, parent, tree)
            self._json(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid})

        def tag(self, query: dict[str, list[str]], repo: str, revision: str) -> None:
            r = self._repo(repo)
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")
            tag = json.loads(self._body())["tag"]
            if tag in r.refs:
                raise _HubError(409, f"Tag {tag} already exists")
            r.refs[tag] = self._commit_of(r, revision)
            self._json(200, {})

        def branch(self, query: dict[str, list[str]], repo: str, name: str) -> None:
            r = self._repo(repo)
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")
            branch = unquote(name)
            if branch in r.refs:
                raise _HubError(409, f"Branch {branch} already exists")
            start = (json.loads(self._body() or b"{}") or {}).get("startingPoint") or "main"
            r.refs[branch] = self._commit_of(r, start)
            self._json(200, {})

        def resolve(self, query: dict[str, list[str]], repo: str, revision: str, path: str) -> None:
            r = self._repo(repo)
            commit = self._commit_of(r, revision)
            f = r.commits[commit].get(unquote(path))
            head = self.command == "HEAD"
            if f is None:
                raise _HubError(404, "Entry not found", "EntryNotFound")
            headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(f.data)}"'}
            if f.lfs:
                headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))}
            body = f.data if f.served is None else f.served
            if not head and hub.cuts[repo, unquote(path)] > 0:
                hub.cuts[repo, unquote(path)] -= 1
                self.send_response(200)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(
                200, body, {"Content-Type": "application/octet-stream", **headers}, head=head
            )

    return Handler


_ROUTES: list[tuple[str, str, str]] = [
    ("POST", r"^/api/repos/create$", "create_repo"),
    ("GET", rf"{_API}$", "repo_info"),
    ("GET", rf"{_API}/revision/(?P<revision>[^/]+)$", "repo_info"),
    ("GET", rf"{_API}/tree/(?P<revision>[^/]+)(?P<path>/.*)?$", "tree"),
    ("POST", rf"{_API}/preupload/(?P<revision>[^/]+)$", "preupload"),
    ("POST", rf"^/{_REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
    ("PUT", r"^/_lfs/(?P<oid>[0-9a-f]{64})$", "lfs_put"),
    ("POST", r"^/api/validate-yaml$", "validate_yaml"),
    ("POST", rf"{_API}/commit/(?P<revision>[^/]+)$", "commit"),
    ("POST", rf"{_API}/tag/(?P<revision>[^/]+)$", "tag"),
    ("POST", rf"{_API}/branch/(?P<name>[^/]+)$", "branch"),
    ("GET", rf"^/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$", "resolve"),
    ("HEAD", rf"^/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$", "resolve"),
]
