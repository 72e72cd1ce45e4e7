"""The fake GitHub's conversation endpoints (tests/fakegithub.py), through the real gh binary:
repo-wide issue and review comments with ``since``, reviews, check runs, combined statuses,
reactions, and PRs that get pushed to, merged or closed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from shared.github import Response, parse_output

REPO = "repos/octo/demo"


def api(path: str, *, method: str = "GET", body: dict | None = None,
        etag: str | None = None) -> Response:
    """One ``gh api -i`` call (gh's environment points it at the fake)."""
    args = [shutil.which("gh"), "api", "-i", "-X", method,
            "-H", "Accept: application/vnd.github+json"]
    if etag:
        args += ["-H", f"If-None-Match: {etag}"]
    if body is not None:
        args += ["--input", "-"]
    done = subprocess.run([*args, "--", path], capture_output=True, timeout=30,
                          input=json.dumps(body).encode() if body is not None else None)
    resp = parse_output(done.stdout)
    assert resp is not None, done.stderr.decode()
    return resp


def test_repo_wide_issue_comments_cover_issues_and_prs_with_since_and_pages(fake_github):
    issue = fake_github.add_issue("an issue")["number"]
    pr = fake_github.add_pr("auto/gh-1")["number"]
    first = fake_github.add_comment(issue, "on the issue", author="alice",
                                    association="CONTRIBUTOR")
    fake_github.advance_clock(60)
    on_pr = fake_github.add_comment(pr, "on the PR", author="bob", association="MEMBER")
    fake_github.advance_clock(60)
    later = fake_github.add_comment(issue, "a later one", author="octo")

    listed = api(f"{REPO}/issues/comments").data

    assert [c["id"] for c in listed] == [first["id"], on_pr["id"], later["id"]]  # ascending
    pr_comment = listed[1]
    assert pr_comment["issue_url"] == f"http://api.github.localhost/{REPO}/issues/{pr}"
    assert pr_comment["html_url"].endswith(f"/pull/{pr}#issuecomment-{on_pr['id']}")
    assert (pr_comment["user"]["login"], pr_comment["author_association"],
            pr_comment["body"]) == ("bob", "MEMBER", "on the PR")
    assert pr_comment["created_at"] == pr_comment["updated_at"]
    assert listed[0]["author_association"] == "CONTRIBUTOR"
    assert listed[2]["author_association"] == "OWNER"  # the repository's owner by default

    since = api(f"{REPO}/issues/comments?since={on_pr['updated_at']}").data
    assert [c["body"] for c in since] == ["on the PR", "a later one"]  # updated at or after

    fake_github.advance_clock(60)
    fake_github.edit_comment(first["id"], "edited")  # an edit moves updated_at: seen again
    since = api(f"{REPO}/issues/comments?since={later['updated_at']}&sort=updated"
                "&direction=asc").data
    assert [c["body"] for c in since] == ["a later one", "edited"]

    page1 = api(f"{REPO}/issues/comments?per_page=2")
    assert [c["id"] for c in page1.data] == [first["id"], on_pr["id"]]
    page2 = api(page1.next_url)
    assert [c["id"] for c in page2.data] == [later["id"]] and page2.next_url is None


def test_an_unchanged_listing_answers_304_and_a_new_comment_changes_it(fake_github):
    issue = fake_github.add_issue("an issue")["number"]
    fake_github.add_comment(issue, "one")
    path = f"{REPO}/issues/comments?sort=updated&direction=desc&per_page=100"
    first = api(path)
    remaining = fake_github.rate_remaining

    again = api(path, etag=first.etag)

    assert again.status == 304 and fake_github.rate_remaining == remaining
    fake_github.add_comment(issue, "two")
    changed = api(path, etag=first.etag)
    assert changed.status == 200 and [c["body"] for c in changed.data] == ["two", "one"]


def test_reviews_list_in_order_and_move_the_pr(fake_github):
    pr = fake_github.add_pr("auto/gh-2")
    fake_github.advance_clock(60)
    approved = fake_github.add_review(pr["number"], "APPROVED", "looks good", author="alice",
                                      association="COLLABORATOR")
    fake_github.advance_clock(60)
    fake_github.add_review(pr["number"], "CHANGES_REQUESTED", "please rename", author="bob")

    reviews = api(f"{REPO}/pulls/{pr['number']}/reviews").data

    assert [(r["state"], r["body"], r["user"]["login"]) for r in reviews] == [
        ("APPROVED", "looks good", "alice"), ("CHANGES_REQUESTED", "please rename", "bob")]
    first = reviews[0]
    assert first["id"] == approved["id"] and first["author_association"] == "COLLABORATOR"
    assert first["commit_id"] == pr["head"]["sha"] and first["submitted_at"]
    assert first["html_url"].endswith(f"/pull/{pr['number']}#pullrequestreview-{first['id']}")
    updated = api(f"{REPO}/pulls?state=all").data[0]["updated_at"]
    assert updated == reviews[1]["submitted_at"] > pr["updated_at"]
    assert api(f"{REPO}/pulls/999/reviews").status == 404


def test_review_comments_per_pr_and_repo_wide_since(fake_github):
    one = fake_github.add_pr("auto/gh-3")
    two = fake_github.add_pr("auto/gh-4")
    review = fake_github.add_review(one["number"], "COMMENTED", "a few notes", author="alice")
    early = fake_github.add_review_comment(one["number"], "typo here", path="src/a.py",
                                           line=12, author="alice", review_id=review["id"])
    fake_github.advance_clock(60)
    lone = fake_github.add_review_comment(two["number"], "why?", path="b.py", line=None,
                                          original_line=3, side="LEFT", author="bob",
                                          association="NONE")

    per_pr = api(f"{REPO}/pulls/{one['number']}/comments").data
    assert [c["id"] for c in per_pr] == [early["id"]]
    c = per_pr[0]
    assert (c["path"], c["line"], c["original_line"], c["side"], c["body"]) == \
        ("src/a.py", 12, 12, "RIGHT", "typo here")
    assert c["pull_request_review_id"] == review["id"] and c["user"]["login"] == "alice"
    assert c["pull_request_url"] == f"http://api.github.localhost/{REPO}/pulls/{one['number']}"
    assert c["diff_hunk"].startswith("@@") and c["created_at"] == c["updated_at"]
    assert c["author_association"] == "NONE"  # alice is no one to this repository

    everything = api(f"{REPO}/pulls/comments").data
    assert [c["id"] for c in everything] == [early["id"], lone["id"]]
    since = api(f"{REPO}/pulls/comments?since={lone['created_at']}").data
    assert [(c["body"], c["line"], c["original_line"], c["side"]) for c in since] == \
        [("why?", None, 3, "LEFT")]
    # a lone comment comes with an empty COMMENTED review of its own, as on GitHub
    reviews = api(f"{REPO}/pulls/{two['number']}/reviews").data
    assert [(r["id"], r["state"], r["body"]) for r in reviews] == \
        [(lone["pull_request_review_id"], "COMMENTED", "")]


def test_check_runs_of_a_ref_update_in_place_with_etags(fake_github):
    pr = fake_github.add_pr("auto/gh-5")
    sha = pr["head"]["sha"]
    fake_github.set_check_run("auto/gh-5", "tests", "in_progress")
    path = f"{REPO}/commits/{sha}/check-runs"
    running = api(path)

    assert running.data["total_count"] == 1
    run = running.data["check_runs"][0]
    assert (run["name"], run["head_sha"], run["status"], run["conclusion"]) == \
        ("tests", sha, "in_progress", None)
    assert api(path, etag=running.etag).status == 304

    fake_github.set_check_run(sha, "tests", "completed", "failure", title="2 failed",
                              summary="test_a, test_b", text="details",
                              details_url="https://ci.example/1")
    fake_github.set_check_run(sha, "lint")
    done = api(path, etag=running.etag)
    assert done.status == 200 and done.data["total_count"] == 2
    tests = done.data["check_runs"][0]
    assert tests["id"] == run["id"] and tests["conclusion"] == "failure"
    assert (tests["output"]["title"], tests["output"]["summary"], tests["output"]["text"]) == \
        ("2 failed", "test_a, test_b", "details")
    assert tests["details_url"] == "https://ci.example/1" and tests["html_url"]
    by_branch = api(f"{REPO}/commits/auto%2Fgh-5/check-runs?check_name=lint").data
    assert [r["name"] for r in by_branch["check_runs"]] == ["lint"]
    paged = api(f"{REPO}/commits/{sha}/check-runs?per_page=1")
    assert paged.data["total_count"] == 2 and len(paged.data["check_runs"]) == 1
    assert paged.next_url and api(paged.next_url).data["check_runs"][0]["name"] == "lint"
    assert api(f"{REPO}/commits/{'0' * 40}/check-runs").status == 422


def test_combined_status_takes_the_latest_of_each_context(fake_github):
    pr = fake_github.add_pr("auto/gh-6")
    sha = pr["head"]["sha"]
    path = f"{REPO}/commits/{sha}/status"
    nothing = api(path)
    assert (nothing.data["state"], nothing.data["total_count"]) == ("pending", 0)

    fake_github.set_status(sha, "ci/build", "pending")
    fake_github.set_status(sha, "ci/build", "success", "built", "https://ci.example/b")
    fake_github.set_status(sha, "ci/docs", "success")
    green = api(path, etag=nothing.etag)

    assert green.status == 200 and green.data["state"] == "success"
    assert green.data["sha"] == sha and green.data["total_count"] == 2
    build = green.data["statuses"][0]
    assert (build["context"], build["state"], build["description"], build["target_url"]) == \
        ("ci/build", "success", "built", "https://ci.example/b")
    assert api(path, etag=green.etag).status == 304

    fake_github.set_status("auto/gh-6", "ci/docs", "error", "crashed")
    assert api(path, etag=green.etag).data["state"] == "failure"


def test_reactions_on_an_issue_comment(fake_github):
    issue = fake_github.add_issue("an issue")["number"]
    comment = fake_github.add_comment(issue, "please do X", author="alice")
    path = f"{REPO}/issues/comments/{comment['id']}/reactions"

    created = api(path, method="POST", body={"content": "+1"})
    again = api(path, method="POST", body={"content": "+1"})
    confused = api(path, method="POST", body={"content": "confused"})

    assert (created.status, again.status, confused.status) == (201, 200, 201)
    assert again.data["id"] == created.data["id"] and created.data["user"]["login"] == "octo"
    assert [r["content"] for r in fake_github.comment_reactions(comment["id"])] == \
        ["+1", "confused"]
    rollup = api(f"{REPO}/issues/comments").data[0]["reactions"]
    assert (rollup["total_count"], rollup["+1"], rollup["confused"], rollup["-1"]) == (2, 1, 1, 0)
    assert api(path, method="POST", body={"content": "thumbs up"}).status == 422
    assert api(f"{REPO}/issues/comments/1/reactions", method="POST",
               body={"content": "+1"}).status == 404


@pytest.mark.parametrize("ending", ["merge", "close"])
def test_pr_pushes_merges_and_closes(fake_github, ending):
    pr = fake_github.add_pr("auto/gh-7")
    fake_github.advance_clock(60)
    new_sha = fake_github.push_pr(pr["number"])
    pushed = api(f"{REPO}/pulls/{pr['number']}").data
    assert pushed["head"]["sha"] == new_sha != pr["head"]["sha"]
    assert pushed["updated_at"] > pr["updated_at"] and pushed["merged"] is False

    fake_github.advance_clock(60)
    getattr(fake_github, f"{ending}_pr")(pr["number"])

    single = api(f"{REPO}/pulls/{pr['number']}").data
    listed = api(f"{REPO}/pulls?state=closed").data[0]
    as_issue = api(f"{REPO}/issues?state=closed").data[0]
    merged = ending == "merge"
    assert single["state"] == listed["state"] == "closed" and single["closed_at"]
    assert single["merged"] is merged and "merged" not in listed  # as GitHub lists PRs
    assert bool(listed["merged_at"]) is merged and listed["updated_at"] > pushed["updated_at"]
    assert as_issue["pull_request"]["merged_at"] == listed["merged_at"]
    assert "head" not in as_issue and "merged_at" not in as_issue
