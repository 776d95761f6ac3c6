"""The pytest plugin (`harness.pytest_plugin`) as another project uses it.

A consumer's test file, run by pytest in a process of its own where the plugin is auto-loaded through
its `pytest11` entry point, uses nothing but the plugin's fixtures: a fresh environment for the session,
a fresh mailbox per test. It imports delivered mail both ways (a manual import with the service key,
and a queued run the worker picks up); afterwards the environment and the Dovecot must be gone.
"""

from __future__ import annotations

import json

import docker
import pytest

from harness import local_env

pytest_plugins = ["pytester"]

CONSUMER_TEST = '''
import json
import time
import uuid
from email.message import EmailMessage

import psycopg
import pytest

SEEN = {"mailboxes": []}


def messages(recipient, subjects):
    out = []
    for subject in subjects:
        message = EmailMessage()
        message["From"] = "sender@example.org"
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content("hello from a consumer test\\n")
        out.append(message.as_bytes())
    return out


def stored_subjects(env, user_id):
    with psycopg.connect(env.database_url) as conn:
        rows = conn.execute(
            "SELECT subject FROM public.messages WHERE user_id = %s ORDER BY uid", (user_id,)
        ).fetchall()
    return [subject for (subject,) in rows]


@pytest.fixture
def user(autosync_env, autosync_mailbox):
    """A user with auto-sync on and the test's mailbox as their account."""
    env = autosync_env
    # What the outer test looks for once this run is over.
    SEEN["env"] = {"name": env.name, "owned": env.owned}
    SEEN["mailboxes"].append(autosync_mailbox.username)
    SEEN["dovecot"] = autosync_mailbox.server.container.name
    with open("seen.json", "w") as handle:
        json.dump(SEEN, handle)
    user_id = env.new_user()
    headers = env.as_user(user_id)
    # Daily: the user's cron slot is one minute a day, so pg_cron does not race these tests.
    saved = env.client.post(
        "/api/settings/save-auto-sync", headers=headers, json={"enabled": True, "interval_minutes": 1440}
    )
    assert saved.status_code == 200, saved.text
    added = env.client.post("/api/email-accounts", headers=headers, json=autosync_mailbox.account())
    assert added.status_code == 201, added.text
    yield user_id
    env.delete_user(user_id)


def test_manual_import_with_the_service_key(autosync_env, autosync_mailbox, user):
    env = autosync_env
    subjects = ["manual 1", "manual 2", "manual 3"]
    assert autosync_mailbox.deliver(messages(autosync_mailbox.username, subjects)) == 3
    response = env.client.post("/functions/v1/import-emails", headers=env.as_service(), json={"user_id": str(user)})
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == 3
    history = env.client.get("/api/sync/history", headers=env.as_user(user)).json()["runs"]
    assert [(run["trigger"], run["status"], run["messages_imported"]) for run in history] == [
        ("manual", "succeeded", 3)
    ]
    assert stored_subjects(env, user) == subjects


def test_queued_run_is_imported_by_the_worker(autosync_env, autosync_mailbox, user):
    env = autosync_env
    subjects = ["queued 1", "queued 2"]
    assert autosync_mailbox.deliver(messages(autosync_mailbox.username, subjects)) == 2
    # What pg_cron's trigger sends at each slot; the worker container does the import.
    queued = env.client.post("/functions/v1/auto-sync", headers=env.as_service(), json={"user_id": str(user)})
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["run_id"]
    deadline = time.monotonic() + 60
    while True:
        runs = env.client.get("/api/sync/history", headers=env.as_user(user)).json()["runs"]
        run = next(run for run in runs if run["id"] == run_id)
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (run["status"], run["messages_imported"]) == ("succeeded", 2), run
    # Each test has a mailbox of its own: nothing of the other test's mail is here.
    assert stored_subjects(env, user) == subjects
'''


@pytest.mark.docker
def test_consumer_suite_gets_an_environment_and_leaves_nothing_behind(
    pytester: pytest.Pytester, function_image: str, docker_engine: docker.DockerClient
) -> None:
    # A consumer's configuration: warnings are errors (a leaked socket would fail the run).
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n    ignore::DeprecationWarning:docker.*\n")
    pytester.makepyfile(test_consumer=CONSUMER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=600)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()

    seen = json.loads((pytester.path / "seen.json").read_text())
    name = seen["env"]["name"]
    assert seen["env"]["owned"] is True
    assert name.startswith("autosync-pytest-"), seen
    assert len(set(seen["mailboxes"])) == 2, seen
    assert local_env.leftovers(name) == [], "the session's environment was not removed"
    assert not local_env.state_file(name).exists()
    assert docker_engine.containers.list(all=True, filters={"name": f"^{seen['dovecot']}$"}) == []


def test_half_exported_coordinates_are_a_clear_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some AUTOSYNC_E2E_* variables but not all: say which are missing rather than stand up another."""
    for key in local_env.Coordinates("x", "u", "d", "s", "j").environ():
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(local_env.E2E_API_URL, "http://127.0.0.1:9")
    pytester.makepyfile(test_consumer="def test_needs_it(autosync_env):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"*autosync_env: {local_env.E2E_DATABASE_URL}, {local_env.E2E_SERVICE_KEY}, {local_env.E2E_JWT_SECRET} not set*"
        ]
    )
