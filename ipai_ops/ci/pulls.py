"""Pull requests from GitHub's REST API, in the PR-shaped form ``ipai-ops bench score`` reads
(:class:`ipai_ops.ci.bench.Subject`): title, body, files with their line counts, the head
commit's check runs with their timestamps (what ``ci`` and ``time_to_green`` are scored
from), reviews, labels, and when it was opened and merged. A ``variant:<id>`` label puts the
PR's scores in that variant, the group ``ipai-ops bench compare`` compares.

The same client as the Actions ingest (:class:`ipai_ops.ci.github_actions.GitHubClient`):
token, pagination through ``Link: rel="next"``, rate-limit waits up to ``max_wait`` and
typed errors (``GITHUB.AUTH_FAILED``, ``GITHUB.NOT_FOUND``, ``GITHUB.RATE_LIMITED``, ...).
Offline, a subject saved with ``bench score --save DIR`` is scored again with
``--subject-file``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ipai_ops.ci.github_actions import GitHubClient, GitHubError

#: GitHub lists at most 3,000 files of a pull request; more is reported, not guessed.
MAX_FILES = 3000
#: Pull requests looked at per ``--since`` query (newest updated first), at most.
MAX_LISTED = 1000
#: A label ``variant:<id>`` records the PR's scores under that variant (``bench compare``).
VARIANT_LABEL_PREFIX = "variant:"


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def fetch_pull(client: GitHubClient, repository: str, number: int) -> dict[str, Any]:
    """One pull request as a bench subject (all pages of files, check runs and reviews)."""
    pr = client.get_json(f"/repos/{repository}/pulls/{number}")
    if not isinstance(pr, dict) or pr.get("number") != number:
        raise GitHubError(
            f"GitHub's answer for {repository}#{number} is not a pull request",
            failure_code="UNCLASSIFIED.UNKNOWN",
        )
    files: list[dict[str, Any]] = []
    for item in client.paginate(f"/repos/{repository}/pulls/{number}/files", key="files"):
        files.append(
            {
                "filename": str(item.get("filename")),
                "status": item.get("status"),
                "additions": int(item.get("additions") or 0),
                "deletions": int(item.get("deletions") or 0),
            }
        )
        if len(files) >= MAX_FILES:
            break
    head = (pr.get("head") or {}).get("sha")
    checks = None
    pending: list[str] = []
    if head:
        checks = []
        for run in client.paginate(f"/repos/{repository}/commits/{head}/check-runs", key="check_runs"):
            if run.get("status") != "completed":  # not decided yet: neither a pass nor a failure
                pending.append(str(run.get("name")))
                continue
            checks.append(
                {
                    "name": str(run.get("name")),
                    "conclusion": run.get("conclusion"),
                    "started_at": run.get("started_at"),
                    "completed_at": run.get("completed_at"),
                }
            )
    reviews = [
        {"user": (r.get("user") or {}).get("login"), "state": r.get("state"), "submitted_at": r.get("submitted_at")}
        for r in client.paginate(f"/repos/{repository}/pulls/{number}/reviews", key="reviews")
    ]
    changed = int(pr.get("changed_files") or len(files))
    labels = sorted(str(label.get("name")) for label in pr.get("labels") or () if isinstance(label, dict))
    variants = sorted(
        {name[len(VARIANT_LABEL_PREFIX) :].strip() for name in labels if name.startswith(VARIANT_LABEL_PREFIX)} - {""}
    )
    subject: dict[str, Any] = {
        "subject": f"github:{repository}#{number}",
        "source": {
            "repository": repository,
            "number": number,
            "url": pr.get("html_url"),
            "head_sha": head,
            "merge_commit": pr.get("merge_commit_sha") if pr.get("merged_at") else None,
            "created_at": pr.get("created_at"),
            "merged_at": pr.get("merged_at"),
            "author": (pr.get("user") or {}).get("login"),
            "fetched_with": "ipai-ops bench score --repo --pr",
        },
        "title": pr.get("title") or "",
        "body": pr.get("body") or "",
        "files": files,
        "check_runs": checks,
        "reviews": reviews,
        "labels": labels,
    }
    if len(variants) == 1:
        subject["variant_id"] = variants[0]
    elif variants:  # two variants on one PR: which group it belongs to is not ours to guess
        subject["variant_note"] = f"labels name {len(variants)} variants ({', '.join(variants)}): none recorded"
    if pending:
        subject["checks_pending"] = sorted(set(pending))
    if changed > len(files):
        subject["files_note"] = f"GitHub lists {len(files)} of {changed} changed files"
    return subject


def merged_since(client: GitHubClient, repository: str, since: datetime) -> list[int]:
    """Numbers of the pull requests merged at or after ``since``, oldest merge first."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    merged: list[tuple[datetime, int]] = []
    params = {"state": "closed", "sort": "updated", "direction": "desc"}
    for seen, pr in enumerate(client.paginate(f"/repos/{repository}/pulls", key="pulls", params=params), start=1):
        updated = _ts(pr.get("updated_at"))
        if updated is not None and updated < since:
            break  # newest updated first: nothing older can have been merged since
        at = _ts(pr.get("merged_at"))
        if at is not None and at >= since:
            merged.append((at, int(pr["number"])))
        if seen >= MAX_LISTED:
            break
    return [number for _, number in sorted(merged)]
