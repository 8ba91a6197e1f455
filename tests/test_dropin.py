"""Drop-in use: mount on an existing Session, install() for legacy scripts."""

from __future__ import annotations

import pytest
import requests
import requests.sessions

import requests_bloxs_errors as rbe

from .helpers.server import Reply

ISE = Reply(500, '{"error": "internal_server_error"}', {"Content-Type": "application/json"})


def legacy_script(url: str) -> tuple[int, str]:
    """How scripts written against plain requests handle errors."""
    response = requests.get(url, timeout=5)
    if response.status_code != 200:
        try:
            response.raise_for_status()
        except requests.exceptions.HTTPError as error:
            return response.status_code, type(error).__name__
    return response.status_code, "ok"


def test_install_routes_plain_requests_get_through_the_adapter(server):
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    rbe.install("http://", backoff_factor=0.01)
    assert requests.get(server.url("/r"), timeout=5).text == "ok"
    assert len(server.seen()) == 2


def test_legacy_code_still_sees_status_codes_and_http_errors(server):
    server.route("GET", "/missing", Reply(404, "nope"))
    rbe.install("http://")
    assert legacy_script(server.url("/missing")) == (404, "NotFoundError")


def test_uninstall_restores_exactly_the_original_classes(server):
    before = (requests.Session, requests.sessions.Session)
    rbe.install("http://")
    assert requests.Session is rbe.patch.InstalledSession
    assert requests.sessions.Session is rbe.patch.InstalledSession
    rbe.uninstall()
    assert (requests.Session, requests.sessions.Session) == before
    rbe.uninstall()  # twice is harmless
    assert (requests.Session, requests.sessions.Session) == before
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    assert requests.get(server.url("/r"), timeout=5).status_code == 500  # no retries any more


def test_install_twice_replaces_the_configuration_and_uninstall_restores_once(server):
    before = (requests.Session, requests.sessions.Session)
    rbe.install("http://", max_retries=0)
    rbe.install("http://", max_retries=1, backoff_factor=0.01)
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    assert requests.get(server.url("/r"), timeout=5).status_code == 200
    rbe.uninstall()
    assert (requests.Session, requests.sessions.Session) == before


def test_installed_context_manager_restores_the_previous_state(server):
    before = (requests.Session, requests.sessions.Session)
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    with rbe.installed("http://", backoff_factor=0.01):
        assert requests.get(server.url("/r"), timeout=5).status_code == 200
    assert (requests.Session, requests.sessions.Session) == before


def test_installed_context_manager_nests_inside_install():
    rbe.install("http://", max_retries=1)
    with rbe.installed("http://", max_retries=5):
        assert requests.Session().get_adapter("http://x").max_retries.total == 5
    assert requests.Session().get_adapter("http://x").max_retries.total == 1


def test_installed_context_manager_restores_after_an_exception():
    before = (requests.Session, requests.sessions.Session)
    with pytest.raises(RuntimeError), rbe.installed("http://"):
        raise RuntimeError("boom")
    assert (requests.Session, requests.sessions.Session) == before


def test_install_validates_its_configuration_at_once():
    before = (requests.Session, requests.sessions.Session)
    with pytest.raises(ValueError, match="max_retries"):
        rbe.install("https://", max_retries=-1)
    with pytest.raises(ValueError, match="prefix"):
        rbe.install("acme.bloxs.io")
    assert (requests.Session, requests.sessions.Session) == before


def test_install_leaves_other_prefixes_alone(server):
    rbe.install("https://")
    session = requests.Session()
    assert isinstance(session.get_adapter("https://a.io/"), rbe.BloxsAdapter)
    assert type(session.get_adapter("http://a.io/")) is requests.adapters.HTTPAdapter


def test_mount_keeps_the_sessions_other_settings(server):
    session = requests.Session()
    session.headers["X-Team"] = "finance"
    adapter = rbe.mount(session, "http://")
    assert session.get_adapter("http://x/") is adapter
    server.route("GET", "/r", Reply(200, "ok"))
    session.get(server.url("/r"))
    assert server.seen()[0].headers["X-Team"] == "finance"


def test_raise_for_status_is_typed_and_still_an_http_error(server, session, fast):
    server.route("GET", "/r", Reply(404, "nope"))
    response = session.get(server.url("/r"))
    with pytest.raises(requests.exceptions.HTTPError) as caught:
        response.raise_for_status()
    assert isinstance(caught.value, rbe.NotFoundError)
    assert caught.value.response is response
    assert caught.value.request is response.request
    assert response.ok is False
    assert response.status_code == 404


def test_raise_errors_raises_from_send(server, session):
    rbe.mount(session, "http://", raise_errors=True)
    server.route("GET", "/r", Reply(405, "use POST"))
    with pytest.raises(rbe.MethodNotAllowedError) as caught:
        session.get(server.url("/r"))
    assert caught.value.response.text == "use POST"


def test_success_responses_are_unchanged(server, session, fast):
    server.route("GET", "/r", Reply(200, '{"a": 1}', {"Content-Type": "application/json"}))
    response = session.get(server.url("/r"))
    assert type(response) is requests.Response
    response.raise_for_status()
    assert response.json() == {"a": 1}
