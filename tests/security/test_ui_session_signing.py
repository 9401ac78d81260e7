"""Dashboard cookies and CSRF tokens need the server secret, not only database contents.

They used to be signed under the key's stored hash alone, so a database dump sufficed to
mint a session for any key in it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Role
from hpo_service.errors import AuthenticationError
from hpo_service.services import api_keys, ui_sessions
from tests.security.key_rows import stored_hash


def test_a_cookie_forged_from_a_database_dump_is_refused(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow())
    genuine = ui_sessions.open_session(db, issued.key, now=utcnow(), ttl_seconds=600)
    assert ui_sessions.resume_session(db, genuine.cookie, now=utcnow()).principal.key_id == (
        issued.id
    )
    # everything an attacker with a dump knows: the key id and its stored hash
    dumped = stored_hash(db, issued.id).encode()
    expiry = int((utcnow() + timedelta(hours=1)).timestamp())
    body = f"{issued.id}.{expiry}.{'ab' * 16}"
    forged = f"{body}.{hmac.new(dumped, body.encode(), hashlib.sha256).hexdigest()}"
    with pytest.raises(AuthenticationError):
        ui_sessions.resume_session(db, forged, now=utcnow())


def test_csrf_token_is_not_computable_from_the_dump(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.CLIENT, tenant="t", now=utcnow())
    session = ui_sessions.open_session(db, issued.key, now=utcnow(), ttl_seconds=600)
    nonce = session.cookie.split(".")[2]
    dumped = stored_hash(db, issued.id).encode()
    guess = hmac.new(dumped, f"csrf.{nonce}".encode(), hashlib.sha256).hexdigest()
    assert guess != session.csrf
    ui_sessions.check_csrf(session, session.csrf)


@pytest.mark.committed  # a second Database handle reads the session
def test_a_cookie_of_another_server_secret_is_refused(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow())
    cookie = ui_sessions.open_session(db, issued.key, now=utcnow(), ttl_seconds=600).cookie
    other = Database(db.url, key_secret="some-other-server-secret")
    try:
        with pytest.raises(AuthenticationError):
            ui_sessions.resume_session(other, cookie, now=utcnow())
    finally:
        other.dispose()
