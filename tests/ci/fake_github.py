"""A local stand-in for the GitHub REST API and its log blob storage (stdlib http.server).

It serves the recorded responses under ``fixtures/github/<name>/`` the way GitHub
does: ``Link`` pagination, rate-limit answers (403 with ``x-ratelimit-*``, 429
with ``retry-after``), 401 for a bad token, a 302 from the logs endpoint to a
signed blob URL, 410 for logs past retention and Azure's 403 for a signed URL
that expired. Every request is recorded so tests can assert what was sent.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FIXTURES = Path(__file__).parent / "fixtures" / "github"


def build_archive(logs_dir: Path, jobs: list[dict[str, Any]], *, step_files: bool = True) -> bytes:
    """A run-attempt log archive shaped like GitHub's.

    ``<index>_<job>.txt`` is the job's whole log (its steps concatenated, one BOM
    at the top); ``<job>/<n>_<step>.txt`` are the step logs (omitted when
    ``step_files`` is false, as in the archives GitHub serves without them).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, job in enumerate(jobs):
            job_dir = logs_dir / job["name"]
            if not job_dir.is_dir():
                continue
            parts = []
            files = sorted(job_dir.iterdir(), key=lambda p: int(p.name.split("_", 1)[0]))
            for file in files:
                text = file.read_text(encoding="utf-8")
                parts.append(text.lstrip("\ufeff"))
                if step_files:
                    info = zipfile.ZipInfo(f"{job['name']}/{file.name}", date_time=(2026, 3, 14, 9, 30, 0))
                    archive.writestr(info, text.encode("utf-8"))
            info = zipfile.ZipInfo(f"{index}_{job['name']}.txt", date_time=(2026, 3, 14, 9, 30, 0))
            archive.writestr(info, ("\ufeff" + "".join(parts)).encode("utf-8"))
    return buffer.getvalue()


@dataclass
class FakeGitHub:
    fixture: str = "acme-shop-run-9001"
    repo: str = "acme/shop"
    token: str = "ghs_fakeInstallationToken0123456789abcdef"
    #: The largest page the fake serves (GitHub's is 100): small to force pagination.
    max_page_size: int = 2
    #: "ok" | "gone" (410 on the logs endpoint) | "expired_url" (blob 403) | "jobs_only".
    logs_mode: str = "ok"
    #: Paths (regex) answered once with a rate-limit response before succeeding.
    rate_limit: dict[str, str] = field(default_factory=dict)
    #: Seconds until x-ratelimit-reset in primary rate-limit answers.
    reset_in: int = 1
    #: Pull requests by number: {"pull": {...}, "files": [...], "check_runs": [...], "reviews": [...]}.
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _limited: set[str] = field(default_factory=set)

    @property
    def dir(self) -> Path:
        return FIXTURES / self.fixture

    def run_json(self) -> dict[str, Any]:
        return json.loads((self.dir / "run.json").read_text())

    def jobs(self, attempt: int = 1) -> list[dict[str, Any]]:
        return json.loads((self.dir / f"jobs_attempt_{attempt}.json").read_text())["jobs"]

    def archive(self, *, step_files: bool = True) -> bytes:
        return build_archive(self.dir / "logs", self.jobs(), step_files=step_files)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self,
        status: int,
        body: bytes | dict | list | str = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        fake.requests.append({"path": path, "query": parts.query, "headers": dict(self.headers.items())})

        if path.startswith("/blob/"):
            return self._blob(fake, path)

        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            return self._send(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"},
            )
        for pattern, kind in fake.rate_limit.items():
            if re.search(pattern, path) and pattern not in fake._limited:
                fake._limited.add(pattern)
                return self._rate_limited(fake, kind)

        if path.startswith(f"/repos/{fake.repo}/pulls") or path.startswith(f"/repos/{fake.repo}/commits/"):
            return self._pulls(fake, path, query)
        prefix = f"/repos/{fake.repo}/actions"
        run = fake.run_json()
        if path == f"{prefix}/runs/{run['id']}":
            return self._send(200, run, self._rate_headers(4990))
        match = re.fullmatch(rf"{re.escape(prefix)}/runs/{run['id']}/attempts/(\d+)/jobs", path)
        if match:
            return self._jobs(fake, int(match.group(1)), query)
        match = re.fullmatch(rf"{re.escape(prefix)}/runs/{run['id']}/attempts/(\d+)/logs", path)
        if match:
            if fake.logs_mode == "gone":
                return self._send(
                    410,
                    {
                        "message": "Gone",
                        "documentation_url": "https://docs.github.com/rest/actions/workflow-runs#download-workflow-run-attempt-logs",
                        "status": "410",
                    },
                )
            signed = f"{fake.url}/blob/actions-results/{run['id']}/{match.group(1)}/logs.zip?" + urlencode(
                {
                    "rsct": "application/zip",
                    "se": "2026-03-14T09:32:00Z",
                    "sig": "c2lnbmF0dXJl",
                    "sp": "r",
                    "sr": "b",
                    "sv": "2025-01-05",
                }
            )
            return self._send(302, b"", {"Location": signed})
        return self._send(
            404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
        )

    def _rate_headers(self, remaining: int, reset: int | None = None) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset or int(time.time()) + 3600),
            "x-ratelimit-used": str(5000 - remaining),
            "x-ratelimit-resource": "core",
        }

    def _rate_limited(self, fake: FakeGitHub, kind: str) -> None:
        if kind == "retry-after":
            return self._send(
                429,
                {
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                    "again.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    "status": "429",
                },
                {"retry-after": "1"},
            )
        reset = int(time.time()) + fake.reset_in
        return self._send(
            403,
            {
                "message": "API rate limit exceeded for installation ID 48151623.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                "status": "403",
            },
            self._rate_headers(0, reset),
        )

    def _pulls(self, fake: FakeGitHub, path: str, query: dict[str, list[str]]) -> None:
        base = f"/repos/{fake.repo}"
        if path == f"{base}/pulls":
            listed = sorted((p["pull"] for p in fake.pulls.values()), key=lambda p: p["updated_at"], reverse=True)
            return self._page(fake, listed, None, query)
        match = re.fullmatch(rf"{re.escape(base)}/pulls/(\d+)(/files|/reviews)?", path)
        if match and int(match.group(1)) in fake.pulls:
            pr = fake.pulls[int(match.group(1))]
            if match.group(2) is None:
                return self._send(200, pr["pull"], self._rate_headers(4970))
            return self._page(fake, pr[match.group(2)[1:]], None, query)
        match = re.fullmatch(rf"{re.escape(base)}/commits/([0-9a-f]+)/check-runs", path)
        if match:
            for pr in fake.pulls.values():
                if pr["pull"]["head"]["sha"] == match.group(1):
                    return self._page(fake, pr["check_runs"], "check_runs", query)
        return self._send(
            404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
        )

    def _page(self, fake: FakeGitHub, items: list[Any], key: str | None, query: dict[str, list[str]]) -> None:
        """One page of ``items``, with GitHub's Link header; an object ``{key: page}`` or a bare list."""
        per_page = min(int(query.get("per_page", ["30"])[0]), fake.max_page_size)
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        base = f"{fake.url}{urlsplit(self.path).path}"
        keep = "&".join(f"{k}={v[0]}" for k, v in sorted(query.items()) if k not in ("per_page", "page"))
        keep = f"&{keep}" if keep else ""
        headers = self._rate_headers(4980)
        if page < last:
            headers["Link"] = (
                f'<{base}?per_page={per_page}&page={page + 1}{keep}>; rel="next", '
                f'<{base}?per_page={per_page}&page={last}{keep}>; rel="last"'
            )
        body: Any = {"total_count": len(items), key: chunk} if key else chunk
        return self._send(200, body, headers)

    def _jobs(self, fake: FakeGitHub, attempt: int, query: dict[str, list[str]]) -> None:
        jobs = fake.jobs(attempt)
        per_page = min(int(query.get("per_page", ["30"])[0]), fake.max_page_size)
        page = int(query.get("page", ["1"])[0])
        chunk = jobs[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(jobs) // per_page))
        base = f"{fake.url}{urlsplit(self.path).path}"
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
            links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
        headers = self._rate_headers(4980)
        if links:
            headers["Link"] = ", ".join(links)
        return self._send(200, {"total_count": len(jobs), "jobs": chunk}, headers)

    def _blob(self, fake: FakeGitHub, path: str) -> None:
        if self.headers.get("Authorization"):
            # Blob storage rejects a second credential; the signed URL is the only one.
            return self._send(
                400, "<Error><Code>InvalidAuthenticationInfo</Code></Error>", content_type="application/xml"
            )
        if fake.logs_mode == "expired_url":
            body = (
                '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server '
                "failed to authenticate the request. Make sure the value of Authorization header is formed "
                "correctly including the signature.\nRequestId:5e0c1f3a-201e-0042-2a1b-9d7a3c000000\n"
                "Time:2026-03-14T10:02:11.4381537Z</Message><AuthenticationErrorDetail>Signature not valid in "
                "the specified time frame: Start [Sat, 14 Mar 2026 09:31:00 GMT] - Expiry [Sat, 14 Mar 2026 "
                "09:32:00 GMT] - Current [Sat, 14 Mar 2026 10:02:11 GMT]</AuthenticationErrorDetail></Error>"
            )
            return self._send(403, body, content_type="application/xml")
        data = fake.archive(step_files=fake.logs_mode != "jobs_only")
        return self._send(200, data, content_type="application/zip")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGitHub


def serve(fake: FakeGitHub) -> tuple[_Server, threading.Thread]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
