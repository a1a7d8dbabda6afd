"""A Hub-compatible server on 127.0.0.1 for the tests: the endpoints huggingface_hub's real client calls.

It speaks the Hub's HTTP API for what publishing and loading use: whoami, repo create, repo info, the write
access check, README metadata validation, preupload (with the oids of the files already there), the LFS batch API
with basic transfers, the LFS upload itself, NDJSON commits (additions and deletions), the file tree and resolve.
Files are kept in memory, every commit is a snapshot, and faults can be queued to test retries and errors: an
error answer (with headers such as Retry-After), or a request handled whose answer is then lost.
The client is pointed here with HF_ENDPOINT; HF_HUB_DISABLE_XET=1 makes it use the LFS upload path (Xet's
content-addressed storage protocol is out of scope for a test server).
"""

import base64
import hashlib
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

# The Hub stores these in LFS; everything else is a regular git blob.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".joblib", ".parquet", ".png", ".onnx")
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    lfs: set[str]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    owner: str
    sdk: str | None = None
    commits: list[Commit] = field(default_factory=list)
    readers: set[str] = field(default_factory=set)  # collaborators who may read a private repo but not write it

    def snapshot(self, revision: str) -> Commit | None:
        if not self.commits:
            return Commit(oid="0" * 40, message="", files={}, lfs=set()) if revision == "main" else None
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c.oid == revision), None)


@dataclass
class Fault:
    """Answer the next `times` requests whose method matches and whose path matches `path_regex` with `status` and
    `headers`; or, with `lose_response`, handle them and close the connection unanswered, as when the network loses
    the Hub's answer to a request the Hub carried out; or, with `stall_s`, handle them that many seconds late, as a
    Hub that is slow to answer."""

    method: str
    path_regex: str
    status: int | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    lose_response: bool = False
    stall_s: float = 0.0


class HubState:
    def __init__(self, tokens: dict[str, str], orgs: dict[str, list[str]]):
        self.tokens = tokens  # token -> user name
        self.orgs = orgs  # user name -> organisations it may write to
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add_fault(
        self, method: str, path_regex: str, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        self.faults.append(Fault(method, path_regex, status, times, headers or {}))

    def lose_responses(self, method: str, path_regex: str, times: int = 1) -> None:
        self.faults.append(Fault(method, path_regex, times=times, lose_response=True))

    def stall(self, method: str, path_regex: str, seconds: float, times: int = 1) -> None:
        self.faults.append(Fault(method, path_regex, times=times, stall_s=seconds))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path_regex, path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def add_repo(self, repo_id: str, private: bool = False, readers: tuple[str, ...] = ()) -> Repo:
        """A model repo of someone the server has no token for, which `readers` may read but not write."""
        repo = Repo(repo_id, "model", private, owner=repo_id.split("/")[0], readers=set(readers))
        self.repos[("model", repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        return self.repos.get((repo_type, repo_id))


class HubHandler(BaseHTTPRequestHandler):
    server_version = "TestHub/1.0"
    protocol_version = "HTTP/1.1"
    # An answer's headers and body are two writes: with Nagle's algorithm the body waits for the client's delayed
    # ACK of the headers, 40 ms per request.
    disable_nagle_algorithm = True

    # ---- plumbing -------------------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def log_message(self, format, *args):  # keep pytest output quiet; requests are recorded in state.requests
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return self.state.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None

    def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
        if body is None:
            body = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if payload is not None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        headers = {"X-Error-Message": message, **(headers or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _dispatch(self):
        path = self.path.split("?", 1)[0]
        self.state.requests.append((self.command, path))
        # The whole body is read before any answer, an error included: left unread, it would be parsed as the next
        # request on this kept-alive connection.
        self.body = self._read_body()
        fault = self.state.take_fault(self.command, path)
        if fault and fault.stall_s:
            time.sleep(fault.stall_s)
        elif fault and not fault.lose_response:
            return self._error(fault.status, f"injected fault {fault.status}", headers=fault.headers)
        elif fault:  # carry the request out, then write the answer nowhere and hang up
            self.wfile, self.close_connection = io.BytesIO(), True
        for method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if method == self.command and match:
                try:
                    return handler(self, **match.groupdict())
                except Exception as err:  # a bug here should fail the test loudly, not hang the client
                    return self._error(500, f"test hub server error: {err!r}")
        self._error(404, f"no route for {self.command} {path}")

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    # ---- access ---------------------------------------------------------------------------------------------
    def _readable(self, repo_type: str, repo_id: str) -> Repo | None:
        """The repo when this request may see it; otherwise answers 401/404 the way the Hub does and returns None."""
        repo = self.state.repo(repo_id, repo_type)
        user = self._user()
        if repo is None or (repo.private and user not in self._writers(repo) | repo.readers):
            self._error(401 if user is None else 404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _revision(self, repo_type: str, repo_id: str, revision: str) -> tuple[Repo | None, Commit | None]:
        """The repo and its commit at `revision`, or (None, None) after answering 401/404 as the Hub does."""
        repo = self._readable(repo_type, repo_id)
        commit = repo.snapshot(revision) if repo else None
        if repo is not None and commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return (repo, commit) if commit else (None, None)

    def _writable(self, repo_type: str, repo_id: str) -> Repo | None:
        repo = self._readable(repo_type, repo_id)
        if repo is not None and self._user() not in self._writers(repo):
            self._error(403, "You don't have the rights to write to this repository")
            return None
        return repo

    def _writers(self, repo: Repo) -> set[str]:
        return {user for user in self.state.tokens.values() if repo.owner in [user, *self.state.orgs.get(user, [])]}

    # ---- endpoints ------------------------------------------------------------------------------------------
    def whoami(self):
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        orgs = [{"name": org, "type": "org"} for org in self.state.orgs.get(user, [])]
        self._send(200, {"type": "user", "name": user, "orgs": orgs, "auth": {"accessToken": {"role": "write"}}})

    def create_repo(self):
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        payload = json.loads(self.body or b"{}")
        owner = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        repo_id = f"{owner}/{payload['name']}"
        if owner not in [user, *self.state.orgs.get(user, [])]:
            return self._error(403, f"You don't have the rights to create a repo under {owner}")
        url = f"{self.server.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self.state.lock:
            if self.state.repo(repo_id, repo_type) is not None:
                # The Hub names the existing repo's URL, and the client reads it.
                return self._send(409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.state.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private, owner, payload.get("sdk"))
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self):
        """The Hub checks a README's metadata block before a commit that adds one; so do we: YAML's parser, then
        what the Hub requires of the keys our cards write."""
        content = json.loads(self.body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {err}"}]})
        problems = _metadata_problems(metadata or {})
        if problems:
            return self._send(400, {"errors": [{"message": problem} for problem in problems]})
        self._send(200, {"warnings": []})

    def repo_info(self, kind: str, repo_id: str, revision: str = "main"):
        repo, commit = self._revision(REPO_TYPES[kind], repo_id, revision)
        if commit is None:
            return
        info = {
            "id": repo_id,
            "private": repo.private,
            "sha": commit.oid,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            "tags": [],
        }
        if repo.sdk:
            info["sdk"] = repo.sdk
        self._send(200, info)

    def auth_check(self, kind: str, repo_id: str, write: str | None = None):
        """200 when the token may read the repo (may write to it, for /write); else 401, 403 or 404 as the Hub."""
        allowed = self._writable if write else self._readable
        if allowed(REPO_TYPES[kind], repo_id) is not None:
            self._send(200, {})

    def preupload(self, kind: str, repo_id: str, revision: str):
        repo = self._writable(REPO_TYPES[kind], repo_id)
        if repo is None:
            return
        head = repo.snapshot(revision)
        if head is None:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        modes = []
        for f in json.loads(self.body)["files"]:
            mode = {"path": f["path"], "uploadMode": "lfs" if _is_lfs(f["path"], f["size"]) else "regular"}
            # The oid of the file already at that path: the client skips a file that has not changed, so a commit
            # retried after its answer was lost finds nothing to commit.
            if f["path"] in head.files:
                mode["oid"] = _oid(head.files[f["path"]], f["path"] in head.lfs)
            modes.append({**mode, "shouldIgnore": False})
        self._send(200, {"files": modes})

    def lfs_batch(self, prefix: str, repo_id: str):
        kind = prefix.rstrip("/") or "models"
        if self._writable(REPO_TYPES[kind], repo_id) is None:
            return
        objects = []
        for obj in json.loads(self.body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.server.url}/lfs-storage/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, oid: str):
        data = self.body
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 does not match the object id")
        self.state.lfs_objects[oid] = data
        self._send(200, {})

    def commit(self, kind: str, repo_id: str, revision: str):
        repo = self._writable(REPO_TYPES[kind], repo_id)
        if repo is None:
            return
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        with self.state.lock:
            head = repo.snapshot("main")
            files, lfs = dict(head.files), set(head.lfs)
            message = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    message = value["summary"]
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    lfs.discard(value["path"])
                elif key == "lfsFile":
                    if value["oid"] not in self.state.lfs_objects:
                        return self._error(422, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = self.state.lfs_objects[value["oid"]]
                    lfs.add(value["path"])
                elif key in ("deletedFile", "deletedFolder"):
                    doomed = _deleted_paths(files, value["path"], folder=key == "deletedFolder")
                    if not doomed:  # the Hub refuses to delete what is not there, and commits nothing
                        return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                    for name in doomed:
                        del files[name]
                        lfs.discard(name)
            oid = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{sorted(files)}".encode()).hexdigest()
            repo.commits.append(Commit(oid, message, files, lfs))
        url = f"{self.server.url}/{repo_id}/commit/{oid}"
        self._send(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None, "success": True})

    def tree(self, kind: str, repo_id: str, revision: str, path: str | None = None):
        repo, commit = self._revision(REPO_TYPES[kind], repo_id, revision)
        if commit is None:
            return
        prefix = path.strip("/") + "/" if path and path.strip("/") else ""
        entries = [
            _tree_entry(name, data, name in commit.lfs)
            for name, data in sorted(commit.files.items())
            if name.startswith(prefix)
        ]
        self._send(200, entries)

    def resolve(self, prefix: str, repo_id: str, revision: str, path: str):
        kind = prefix.rstrip("/") or "models"
        repo, commit = self._revision(REPO_TYPES[kind], repo_id, revision)
        if commit is None:
            return
        if path not in commit.files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = commit.files[path]
        etag = _oid(data, path in commit.lfs)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"'}
        if path in commit.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        self._send(200, headers=headers, body=data)


def _metadata_problems(metadata: dict) -> list[str]:
    """The Hub's rules for the metadata keys our cards write: model-index entries have a name and results,
    base_model names models by id (never a local path), license is one id, language one code or a list of them,
    and each widget example is an object."""
    problems = []
    if any("name" not in entry or "results" not in entry for entry in metadata.get("model-index", [])):
        problems.append("model-index entries need a name and results")
    base = metadata.get("base_model", [])
    problems += [
        f"base_model {model!r} is not a model id"
        for model in ([base] if isinstance(base, str) else base)
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(model))
    ]
    if not isinstance(metadata.get("license", ""), str):
        problems.append("license must be a string")
    language = metadata.get("language", [])
    if not all(isinstance(code, str) for code in ([language] if isinstance(language, str) else language)):
        problems.append("language must be a string or a list of strings")
    if not all(isinstance(example, dict) for example in metadata.get("widget", [])):
        problems.append("widget examples must be objects")
    return problems


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size > 10 * 2**20


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _deleted_paths(files: dict[str, bytes], path: str, folder: bool) -> list[str]:
    """What a deletedFile operation removes (that file) or a deletedFolder one (every file under the folder)."""
    if not folder:
        return [path] if path in files else []
    return [name for name in files if name.startswith(path.rstrip("/") + "/")]


def _oid(data: bytes, is_lfs: bool) -> str:
    """How the Hub names a file's content: the sha256 of an LFS file, the git blob oid of a regular one."""
    return hashlib.sha256(data).hexdigest() if is_lfs else _git_blob_oid(data)


def _tree_entry(path: str, data: bytes, is_lfs: bool) -> dict:
    entry = {"type": "file", "path": path, "size": len(data), "oid": _git_blob_oid(data)}
    if is_lfs:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


_REPO = r"(?P<repo_id>[\w.-]+/[\w.-]+)"
_KIND = r"(?P<kind>models|datasets|spaces)"
_PREFIX = r"(?P<prefix>(?:datasets/|spaces/)?)"
ROUTES = [
    ("GET", r"/api/whoami-v2", HubHandler.whoami),
    ("POST", r"/api/repos/create", HubHandler.create_repo),
    ("POST", r"/api/validate-yaml", HubHandler.validate_yaml),
    ("GET", rf"/api/{_KIND}/{_REPO}", HubHandler.repo_info),
    ("GET", rf"/api/{_KIND}/{_REPO}/revision/(?P<revision>[^/]+)", HubHandler.repo_info),
    ("GET", rf"/api/{_KIND}/{_REPO}/auth-check(?:/(?P<write>write))?", HubHandler.auth_check),
    ("POST", rf"/api/{_KIND}/{_REPO}/preupload/(?P<revision>[^/]+)", HubHandler.preupload),
    ("POST", rf"/api/{_KIND}/{_REPO}/commit/(?P<revision>[^/]+)", HubHandler.commit),
    ("GET", rf"/api/{_KIND}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", HubHandler.tree),
    ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", HubHandler.lfs_batch),
    ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", HubHandler.lfs_upload),
    ("GET", rf"/{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubHandler.resolve),
    ("HEAD", rf"/{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubHandler.resolve),
]


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = HubState(tokens, orgs or {})
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        # A short poll: shutting down waits for it, at the end of every test that uses the server.
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
