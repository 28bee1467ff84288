"""A local Git server: the generated repo committed to a bare repository and served read-only over smart HTTP
(`git http-backend` behind a tiny CGI server on 127.0.0.1), since Flux's GitRepository takes only http(s)/ssh URLs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .command import Command

AUTHOR = {"GIT_AUTHOR_NAME": "servingops", "GIT_AUTHOR_EMAIL": "servingops@127.0.0.1",
          "GIT_COMMITTER_NAME": "servingops", "GIT_COMMITTER_EMAIL": "servingops@127.0.0.1"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "servingops-git/1"
    project_root: Path  # set on the subclass

    def do_GET(self) -> None:
        self._cgi(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip() or b"0", 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._cgi(body)

    def _cgi(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.project_root), "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0], "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        if protocol := self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _ and b"\n\n" in proc.stdout:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if proc.returncode != 0 and not head:
            status, payload = 500, proc.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # quiet: the engines' own logs say what they fetched
        pass


class GitServer:
    """`with GitServer(root) as git:` serves root/<name>.git at git.url(name); git.commit(name, folder, message)."""

    def __init__(self, root: Path):
        self.root = root
        handler = type("Handler", (_Handler,), {"project_root": root})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{name}.git"

    def commit(self, name: str, folder: Path, message: str, branch: str = "main") -> str:
        """Make `branch` of <name>.git hold exactly the files of `folder` (its own .git excluded); the new commit."""
        bare = self.root / f"{name}.git"
        work = self.root / f"{name}.work"
        if not bare.exists():
            Command(("git", "init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))).run()
            Command(("git", "init", "--quiet", f"--initial-branch={branch}", str(work))).run()
        for entry in work.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        shutil.copytree(folder, work, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        git = ("git", "-C", str(work))
        Command((*git, "add", "--all")).run()
        Command((*git, "commit", "--quiet", "--allow-empty", "-m", message), env=AUTHOR).run()
        Command((*git, "push", "--quiet", "--force", str(bare), f"HEAD:refs/heads/{branch}")).run()
        return Command((*git, "rev-parse", "HEAD")).run().stdout.strip()
