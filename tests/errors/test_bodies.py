"""Request bodies across retries: rewound when possible, never resent empty."""

from __future__ import annotations

import io

import requests

import requests_bloxs_errors as rbe

from ..helpers.server import Reply


def test_file_body_is_rewound_before_each_attempt(server, session, fast, tmp_path):
    payload = b"0123456789" * 1000
    path = tmp_path / "upload.bin"
    path.write_bytes(payload)
    server.route("PUT", "/f", Reply(503, "down"), Reply(500, "oops"), Reply(200, "stored"))
    with path.open("rb") as body:
        response = session.put(server.url("/f"), data=body)
    assert response.status_code == 200
    assert [r.body for r in server.seen()] == [payload] * 3


def test_bytesio_body_is_rewound_from_its_starting_offset(server, session, fast):
    body = io.BytesIO(b"HEADERpayload")
    body.seek(6)  # the caller already consumed a prefix: only the rest is the body
    server.route("PUT", "/f", Reply(503, "down"), Reply(200, "ok"))
    assert session.put(server.url("/f"), data=body).status_code == 200
    assert [r.body for r in server.seen()] == [b"payload", b"payload"]


def test_generator_body_is_never_resent(server, session, fast, rbe_logs):
    def chunks():
        yield b"part-1;"
        yield b"part-2;"

    server.route("PUT", "/g", Reply(503, "down"), Reply(200, "ok"))
    response = session.put(server.url("/g"), data=chunks())
    # urllib3 alone would resend the exhausted generator as an empty body
    assert response.status_code == 503
    assert [r.body for r in server.seen()] == [b"part-1;part-2;"]
    assert "cannot be rewound" in response.attempts[-1].decision


def test_generator_body_with_idempotency_key_is_still_not_resent(server, session, fast):
    server.route("POST", "/g", Reply(429, "slow", {"Retry-After": "0"}), Reply(201, "made"))
    response = session.post(
        server.url("/g"), data=iter([b"a", b"b"]), headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == 429
    assert [r.body for r in server.seen()] == [b"ab"]


def test_json_and_form_bodies_arrive_whole_on_every_attempt(server, session, fast):
    server.route("POST", "/j", Reply(429, "slow", {"Retry-After": "0"}), Reply(201, "made"))
    session.post(server.url("/j"), json={"name": "Complex A", "units": 12})
    server.route("POST", "/d", Reply(429, "slow", {"Retry-After": "0"}), Reply(201, "made"))
    session.post(server.url("/d"), data={"a": "1", "b": "2"})
    bodies = [r.body for r in server.seen()]
    assert bodies == [b'{"name": "Complex A", "units": 12}'] * 2 + [b"a=1&b=2"] * 2


def test_multipart_upload_is_retried_whole(server, session, fast):
    server.route("POST", "/m", Reply(429, "slow", {"Retry-After": "0"}), Reply(201, "made"))
    response = session.post(server.url("/m"), files={"file": ("a.csv", b"x,y\n1,2\n")})
    assert response.status_code == 201
    first, second = server.seen()
    assert first.body == second.body
    assert b"x,y\n1,2\n" in first.body


def test_streamed_success_body_is_untouched(server, session, fast):
    payload = bytes(range(256)) * 4096  # 1 MiB
    server.route("GET", "/big", Reply(200, payload))
    response = session.get(server.url("/big"), stream=True)
    assert response._content is False  # nothing read by the adapter
    assert type(response) is requests.Response
    received = b"".join(response.iter_content(65536))
    assert received == payload


def test_streamed_error_body_is_readable(server, session, fast):
    server.route(
        "GET", "/e", Reply(404, '{"title": "Not Found"}', {"Content-Type": "application/json"})
    )
    response = session.get(server.url("/e"), stream=True)
    assert response.status_code == 404
    assert b"".join(response.iter_content(4)) == b'{"title": "Not Found"}'
    assert response.json() == {"title": "Not Found"}
    assert isinstance(response, rbe.BloxsResponse)
