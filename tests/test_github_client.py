"""shared.github against the real gh binary and the fake GitHub (tests/fakegithub.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from shared.github import (
    AuthError, GitHub, NotFound, RateLimited, Rejected, Unavailable, parse_output, scrubbed_env,
)

HOSTILE = ("x $(touch /tmp/pwned) `id` ; rm -rf / \n[✅ abc] {p0} \u202e\u200f\x00 "
           "'quote\" -- --input")


@pytest.fixture
def gh(fake_github):
    return GitHub(fake_github.repo)


def test_listing_follows_link_pages_with_absolute_urls(fake_github, gh):
    for n in range(250):
        fake_github.add_issue(f"issue {n}")
    fake_github.add_issue("unlabelled", labels=[])
    fake_github.add_pr("auto/x")  # the issues endpoint returns PRs too; the client drops them
    fake_github.edit_issue(1, labels=["agent"])  # PRs carry labels too
    fake_github.pulls[max(fake_github.pulls)]["labels"] = [{"name": "agent"}]

    listing = gh.list_issues("agent")

    assert sorted(i["number"] for i in listing.items) == list(range(1, 251))
    assert listing.requests == 3 and fake_github.count("GET", "/repos/octo/demo/issues") == 3
    pages = [r.query.get("page") for r in fake_github.requests]
    assert pages == [None, "2", "3"]
    assert listing.changed


def test_unchanged_listing_costs_only_304s_and_keeps_every_item(fake_github, gh):
    for n in range(250):
        fake_github.add_issue(f"issue {n}")
    first = gh.list_issues("agent")
    fake_github.reset_log()
    remaining = fake_github.rate_remaining

    again = gh.list_issues("agent", cached=first.pages)

    assert [r.status for r in fake_github.requests] == [304, 304, 304]
    assert not again.changed and again.fresh == []
    assert again.items == first.items
    assert fake_github.rate_remaining == remaining  # 304s are free


def test_a_change_on_any_page_is_seen(fake_github, gh):
    for n in range(250):
        fake_github.add_issue(f"issue {n}")
    first = gh.list_issues("agent")
    oldest = min(i["number"] for i in first.items)  # least recently updated: on the last page
    fake_github.close_issue(oldest)
    new = fake_github.add_issue("brand new")["number"]

    after = gh.list_issues("agent", cached=first.pages)

    numbers = {i["number"] for i in after.items}
    assert oldest not in numbers and new in numbers and len(numbers) == 250
    assert after.changed


def test_relabelled_old_issue_lands_on_page_one(fake_github, gh):
    for n in range(150):
        fake_github.add_issue(f"issue {n}")
    fake_github.add_issue("old, unlabelled", labels=[], number=500)
    first = gh.list_issues("agent")
    fake_github.set_labels(500, ["agent"])
    after = gh.list_issues("agent", cached=first.pages)
    assert 500 in {i["number"] for i in after.items}


def test_hostile_text_travels_as_data_only(fake_github, gh, tmp_path):
    fake_github.add_issue("target")
    pr = gh.create_pr("auto/gh-1", "main", HOSTILE, HOSTILE * 3)
    gh.post_comment(1, HOSTILE)
    stored = fake_github.open_prs()[0]
    assert stored["title"] == HOSTILE and stored["body"] == HOSTILE * 3
    assert fake_github.issue_comments(1)[0]["body"] == HOSTILE
    # gh shows control characters in answers in caret notation (NUL as ^@)
    assert pr["title"] == HOSTILE.replace("\x00", "^@")
    assert not Path("/tmp/pwned").exists()


def test_create_pr_twice_for_one_head_is_rejected_like_github(fake_github, gh):
    gh.create_pr("auto/gh-7", "main", "t", "b")
    with pytest.raises(Rejected) as err:
        gh.create_pr("auto/gh-7", "main", "t", "b")
    assert err.value.status == 422
    assert len(fake_github.open_prs()) == 1


def test_find_open_pr_asks_once_and_ignores_forks(fake_github, gh):
    fake_github.add_pr("auto/gh-3", head_owner="stranger")
    assert gh.find_open_pr("auto/gh-3") is None
    mine = fake_github.add_pr("auto/gh-3")
    fake_github.reset_log()
    found = gh.find_open_pr("auto/gh-3")
    assert found["number"] == mine["number"] and found["head"]["label"] == "octo:auto/gh-3"
    assert fake_github.count() == 1
    assert fake_github.requests[0].query["head"] == "octo:auto/gh-3"


def test_list_pulls_and_comments_paginate(fake_github, gh):
    for n in range(120):
        fake_github.add_pr(f"auto/t-{n}")
    fake_github.add_issue("talky")
    issue = max(fake_github.issues)
    for n in range(130):
        fake_github.add_comment(issue, f"comment {n}")
    assert len(gh.list_pulls().items) == 120
    assert [c["body"] for c in gh.list_comments(issue)] == [f"comment {n}" for n in range(130)]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable(fake_github, gh, status):
    fake_github.add_issue("x")
    fake_github.fail_next(1, status=status)
    with pytest.raises(Unavailable) as err:
        gh.get_issue(1)
    assert err.value.status == status
    assert gh.get_issue(1)["number"] == 1


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limit_carries_the_reset_time(fake_github, gh, status):
    fake_github.add_issue("x")
    fake_github.rate_limit_next(1, reset_in=120, status=status)
    with pytest.raises(RateLimited) as err:
        gh.get_issue(1)
    assert err.value.remaining == 0
    assert err.value.reset_at == pytest.approx(fake_github.rate_reset, abs=1)
    assert 100 < err.value.reset_at - time.time() < 130


def test_not_found_auth_network_timeout(fake_github, gh, monkeypatch):
    with pytest.raises(NotFound):
        gh.get_issue(99)
    with pytest.raises(NotFound):
        GitHub("octo/elsewhere").list_pulls()
    monkeypatch.setenv("GH_TOKEN", "wrong")
    with pytest.raises(AuthError) as err:
        GitHub(fake_github.repo).get_issue(1)
    assert err.value.status == 401
    monkeypatch.setenv("GH_TOKEN", fake_github.env["GH_TOKEN"])
    fake_github.add_issue("x")
    fake_github.drop_next(1)
    with pytest.raises(Unavailable) as err:
        gh.get_issue(1)
    assert err.value.status is None
    fake_github.slow_next(1, seconds=3)
    with pytest.raises(Unavailable, match="timed out after 0.5 s"):
        GitHub(fake_github.repo, timeout=0.5).get_issue(1)


def test_gh_missing_is_unavailable(tmp_path):
    client = GitHub("octo/demo", gh="gh-not-installed", env={"PATH": str(tmp_path)})
    with pytest.raises(Unavailable, match="not found"):
        client.list_pulls()


def test_gh_not_logged_in_is_an_auth_error(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "GH_CONFIG_DIR": str(tmp_path / "gh"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    with pytest.raises(AuthError):
        GitHub("octo/demo", env=env).list_pulls()


def _recording_gh(tmp_path: Path) -> Path:
    """A stand-in executable that records argv, environment and stdin, to inspect what the
    client hands to gh (the network side is covered by the tests above)."""
    script = tmp_path / "gh-recorder"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"open({str(tmp_path / 'call.json')!r}, 'w').write(json.dumps("
        "{'argv': sys.argv[1:], 'env': dict(os.environ), 'stdin': sys.stdin.read()}))\n"
        "sys.stdout.write('HTTP/2.0 201 Created\\r\\nEtag: W/\"1\"\\r\\n\\r\\n{\"id\": 1}')\n")
    script.chmod(0o755)
    return script


def test_environment_is_scrubbed_and_bodies_go_on_stdin(tmp_path):
    script = _recording_gh(tmp_path)
    base = {"PATH": os.environ["PATH"], "HOME": "/home/x", "GH_TOKEN": "t",
            "AWS_SECRET_ACCESS_KEY": "s", "ANTHROPIC_API_KEY": "k", "PYTHONPATH": "/evil"}
    client = GitHub("octo/demo", gh=str(script), env=base)
    client.create_pr("auto/gh-1", "main", HOSTILE, HOSTILE)
    call = json.loads((tmp_path / "call.json").read_text())
    assert HOSTILE not in " ".join(call["argv"])
    assert json.loads(call["stdin"])["title"] == HOSTILE
    assert call["argv"][:2] == ["api", "-i"] and "--input" in call["argv"]
    assert {"AWS_SECRET_ACCESS_KEY", "ANTHROPIC_API_KEY", "PYTHONPATH"}.isdisjoint(call["env"])
    assert call["env"]["GH_TOKEN"] == "t" and call["env"]["GH_PROMPT_DISABLED"] == "1"
    assert "--hostname" not in call["argv"]


def test_enterprise_host_unless_gh_host_is_set(tmp_path):
    script = _recording_gh(tmp_path)
    env = {"PATH": os.environ["PATH"]}
    GitHub("o/r", host="ghe.example.com", gh=str(script), env=env).post_comment(1, "x")
    argv = json.loads((tmp_path / "call.json").read_text())["argv"]
    assert argv[argv.index("--hostname") + 1] == "ghe.example.com"
    GitHub("o/r", host="ghe.example.com", gh=str(script),
           env={**env, "GH_HOST": "github.localhost"}).post_comment(1, "x")
    assert "--hostname" not in json.loads((tmp_path / "call.json").read_text())["argv"]


def test_from_config(sandbox):
    assert GitHub.from_config(sandbox.cfg) is None
    client = GitHub.from_config(sandbox.write_config(github={"repo": "octo/demo"}))
    assert client.repo == "octo/demo" and client.owner == "octo"


def test_parse_output_shapes():
    resp = parse_output(b'HTTP/2.0 200 OK\r\nLink: <https://api.github.com/x?page=2>; rel="next", '
                        b'<https://api.github.com/x?page=9>; rel="last"\r\nEtag: W/"e"\r\n'
                        b'X-Ratelimit-Remaining: 42\r\n\r\n[1, 2]')
    assert resp.status == 200 and resp.data == [1, 2] and resp.etag == 'W/"e"'
    assert resp.next_url == "https://api.github.com/x?page=2" and resp.rate_remaining == 42
    assert parse_output(b"HTTP/1.1 304 Not Modified\nEtag: x\n\n").status == 304
    assert parse_output(b"") is None
    assert scrubbed_env({"FOO": "1", "PATH": "/bin"})["PATH"] == "/bin"
