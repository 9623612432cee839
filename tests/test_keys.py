"""API keys in the store (issue 12): created by the CLI and by /v1/keys, scoped, expiring, revocable, hashed;
revoked with the key that made them; /v1/whoami, the SDK's and the remote CLI's keys; production started by store
keys alone; `ganforge up` printing the first admin key once.

A real API process per backend (no worker: no job needs to train). Its environment keys (tests/service.py KEYS)
are admins of team-a and team-b; store keys are made here. Every key made is remembered, and the last test reads
the API's log for any of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy
import pytest

from models.db import make_engine
from models.settings import Settings
from models.store import JobStore, as_utc
from models.store.keys import TooManyKeys
from tests.conftest import BACKENDS, api_only
from tests.service import ROOT, TINY_SPEC, Service, free_port

# The documented figure (api/deps.py KEY_CACHE_SECONDS, README): another process's revocation takes effect within
# it. Written here, not imported, so a longer cache fails these tests.
CACHE_SECONDS = 5.0


@dataclass
class Keys:
    """The deployment, and every key made on it (for the log check)."""

    service: Service
    made: list[str] = field(default_factory=list)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`ganforge keys ARGS` against this deployment's store."""
        return subprocess.run(
            [sys.executable, "-m", "ganforge", "keys", *args],
            cwd=ROOT,
            env={**self.service.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cli_create(self, *args: str) -> str:
        result = self.cli("create", *args)
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        self.made.append(key)
        return key

    def api_create(self, body: dict[str, Any], admin: str = "key-a") -> dict[str, Any]:
        with self.service.client(admin) as client:
            response = client.post("/v1/keys", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        self.made.append(created["key"])
        return created

    def store(self) -> JobStore:
        settings = Settings(
            data_dir=self.service.data_dir, database_url=self.service.env.get("GANFORGE_DATABASE_URL", "")
        )
        return JobStore(make_engine(settings.database_url))


@pytest.fixture(scope="module", params=BACKENDS)
def keys(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with api_only(request.param, tmp_path_factory.mktemp(f"ganforge-keys-{request.param}")) as deployment:
        yield Keys(deployment)


def wait_status(client: httpx.Client, path: str, status: int, within: float) -> float:
    """Poll GET `path` until it answers `status`; the seconds it took (fails past `within`)."""
    started = time.monotonic()
    while True:
        answer = client.get(path).status_code
        elapsed = time.monotonic() - started
        if answer == status:
            return elapsed
        assert elapsed < within, f"GET {path} still {answer} after {elapsed:.1f} s"
        time.sleep(0.2)


def test_cli_key_reads_and_lacks_submit(keys: Keys) -> None:
    key = keys.cli_create("--owner", "team-a", "--scopes", "read", "--name", "dashboard")
    assert key.startswith("gf_") and len(key) > 40
    with keys.service.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        refused = client.post("/v1/jobs", json=TINY_SPEC)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "insufficient_scope"
        assert "'submit'" in refused.json()["error"]["message"]
        assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="submit"'
        assert client.get("/v1/keys").status_code == 403


def test_api_key_submits_as_its_owner(keys: Keys) -> None:
    created = keys.api_create({"scopes": ["submit"], "name": "ci", "ttl": "30d"})
    assert created["owner"] == "team-a" and created["scopes"] == ["read", "submit"]
    assert keys.api_create({})["scopes"] == ["read", "submit"]  # the API's default scopes are the CLI's
    assert created["key"].startswith(created["prefix"] + "_") and created["expires_at"] is not None
    with keys.service.client(created["key"]) as client:
        job = client.post("/v1/jobs", json=TINY_SPEC)
        assert job.status_code == 201, job.text
    with keys.service.client("key-a") as team_a, keys.service.client("key-b") as team_b:
        assert team_a.get(f"/v1/jobs/{job.json()['id']}").status_code == 200  # team-a's job
        assert team_b.get(f"/v1/jobs/{job.json()['id']}").status_code == 404
        listed = {k["prefix"]: k for k in team_a.get("/v1/keys").json()["keys"]}
    assert listed[created["prefix"]]["last_used_at"] is not None


def test_unknown_and_malformed_keys_get_401_with_a_challenge(keys: Keys) -> None:
    real = keys.api_create({"scopes": ["read"]})["key"]
    wrong_secret = real[:12] + "x" * 43
    for token in (wrong_secret, "gf_zzzzzzzz_" + "y" * 43, "gf_short", "nonsense"):
        with keys.service.client(token) as client:
            response = client.get("/v1/jobs")
        assert response.status_code == 401, token
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    response = httpx.get(f"{keys.service.url}/v1/jobs")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_expired_key_gets_401(keys: Keys) -> None:
    created = keys.api_create({"scopes": ["read"], "ttl": "2s"})
    with keys.service.client(created["key"]) as client:
        assert client.get("/v1/jobs").status_code == 200
        waited = wait_status(client, "/v1/jobs", 401, within=5)
        response = client.get("/v1/jobs")
    assert waited <= 3  # the expiry is checked on every request, not after the cache time
    assert response.status_code == 401 and response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_revoke_in_the_api_is_at_once_and_from_the_cli_within_the_cache_time(keys: Keys) -> None:
    by_api = keys.api_create({"scopes": ["read"]})
    by_cli = keys.api_create({"scopes": ["read"]})
    with keys.service.client(by_api["key"]) as api_key, keys.service.client(by_cli["key"]) as cli_key:
        assert api_key.get("/v1/jobs").status_code == 200 and cli_key.get("/v1/jobs").status_code == 200
        with keys.service.client("key-a") as admin:
            revoked = admin.delete(f"/v1/keys/{by_api['prefix']}")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        assert api_key.get("/v1/jobs").status_code == 401
        result = keys.cli("revoke", by_cli["prefix"])  # another process: the API notices on its next look
        assert result.returncode == 0, result.stderr
        waited = wait_status(cli_key, "/v1/jobs", 401, within=CACHE_SECONDS + 3)
    assert waited <= CACHE_SECONDS + 1
    assert keys.cli("revoke", "gf_00000000").returncode == 3


def test_list_shows_no_secret_and_other_owners_keys_are_missing(keys: Keys) -> None:
    created = keys.api_create({"scopes": ["admin"], "name": "ops", "expires_at": "2030-01-01T00:00:00Z"})
    secret = created["key"].split("_", 2)[2]
    with keys.service.client(created["key"]) as admin, keys.service.client("key-b") as other:
        listed = admin.get("/v1/keys")
        assert listed.status_code == 200
        assert secret not in listed.text and created["key"] not in listed.text
        entry = next(k for k in listed.json()["keys"] if k["prefix"] == created["prefix"])
        assert entry["scopes"] == ["read", "submit", "admin"] and entry["owner"] == "team-a"
        assert not {"key", "secret_hash"} & set(entry)
        assert created["prefix"] not in other.get("/v1/keys").text
        assert other.delete(f"/v1/keys/{created['prefix']}").status_code == 404
        refused = other.post("/v1/keys", json={"scopes": ["read"], "owner": "team-a"})
        assert refused.status_code == 403 and refused.json()["error"]["details"][0]["field"] == "owner"
    assert admin_still_works(keys, created["key"])
    cli_list = keys.cli("list", "--json")
    assert cli_list.returncode == 0 and created["prefix"] in cli_list.stdout
    assert not any(made in cli_list.stdout or made.split("_", 2)[2] in cli_list.stdout for made in keys.made)
    assert all("key" not in k and "secret_hash" not in k for k in json.loads(cli_list.stdout))


def admin_still_works(keys: Keys, key: str) -> bool:
    with keys.service.client(key) as client:
        return client.get("/v1/keys").status_code == 200


def test_store_keeps_the_hash_not_the_key(keys: Keys) -> None:
    created = keys.api_create({"scopes": ["read"]})
    store = keys.store()
    try:
        record = store.find_key(prefix=created["prefix"])
    finally:
        store.engine.dispose()
    assert record is not None
    row = json.dumps([record.prefix, record.owner, record.name, record.scopes, record.secret_hash])
    assert created["key"] not in row and created["key"].split("_", 2)[2] not in row
    assert record.secret_hash == hashlib.sha256(created["key"].encode()).hexdigest()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["read", "root"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["read"], "ttl": "forever"}, "ttl"),
        ({"scopes": ["read"], "ttl": "0s"}, "ttl"),
        ({"scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"scopes": ["read"], "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"scopes": ["read"], "name": "a\x00b"}, "name"),
        ({"scopes": ["read"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_create_is_a_422_at_the_field(keys: Keys, body: dict[str, Any], field: str) -> None:
    with keys.service.client("key-a") as client:
        response = client.post("/v1/keys", json=body)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field], response.text


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        # a parser keeps the last of a repeated member: an admin scope the client may not have meant
        (b'{"scopes": ["read"], "scopes": ["admin"]}', "scopes", "'scopes' given more than once"),
        (b'{"scopes": ["read"], "name": "a", "ttl": "1h", "name": "b"}', "name", "'name' given more than once"),
        # Python's json reads UTF-16 and a BOM by guessing; the API says it takes UTF-8, and now means it
        ('{"scopes": ["read"]}'.encode("utf-16"), "body", "not UTF-8: it reads as UTF-16"),
        ('{"scopes": ["read"]}'.encode("utf-16-le"), "body", "not UTF-8: it reads as UTF-16-LE"),
        (b'\xef\xbb\xbf{"scopes": ["read"]}', "body", "UTF-8 with a byte order mark"),
        (b'{"scopes": ["r\xe9ad"]}', "body", "the body is not UTF-8: byte 14"),  # FastAPI's own answer, as before
    ],
)
def test_a_json_body_repeating_a_member_or_not_in_utf_8_is_a_422(
    keys: Keys, body: bytes, field: str, fragment: str
) -> None:
    with keys.service.client("key-a") as client:
        response = client.post("/v1/keys", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        (detail,) = response.json()["error"]["details"]
        assert detail["field"] == field and fragment in detail["message"], detail
        # any JSON body: a job's spec too, at the member's path
        spec = json.dumps({**TINY_SPEC, "training": {**TINY_SPEC["training"], "steps": 5}})
        spec = spec.replace('"steps": 5', '"steps": 5, "steps": 6')
        nested = client.post("/v1/jobs?validate_only=true", content=spec, headers={"Content-Type": "application/json"})
        assert nested.status_code == 422, nested.text
        assert nested.json()["error"]["details"][0]["field"] == "training.steps", nested.text


def test_an_owner_holds_at_most_max_active_keys_and_a_revoked_one_frees_its_place(store: JobStore) -> None:
    """KeysStore.create_key(max_active=...) on PostgreSQL and SQLite, concurrent creations included."""
    owner = "team-cap"
    first, _ = store.create_key(owner=owner, scopes=["read"], max_active=2)
    store.create_key(owner=owner, scopes=["read"], max_active=2)
    with pytest.raises(TooManyKeys):
        store.create_key(owner=owner, scopes=["read"], max_active=2)
    store.create_key(owner="team-other", scopes=["read"], max_active=2)  # per owner
    assert store.revoke_key(prefix=first.prefix) is not None
    assert store.count_active_keys(owner=owner) == 1
    store.create_key(owner=owner, scopes=["read"], max_active=2)

    def attempt(_: int) -> bool:
        try:
            store.create_key(owner="team-race", scopes=["read"], max_active=3)
        except TooManyKeys:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        made = sum(pool.map(attempt, range(8)))
    assert made == 3 and store.count_active_keys(owner="team-race") == 3


def test_both_expiries_is_a_422(keys: Keys) -> None:
    with keys.service.client("key-a") as client:
        response = client.post("/v1/keys", json={"scopes": ["read"], "ttl": "1h", "expires_at": "2030-01-01T00:00Z"})
    assert response.status_code == 422 and "not both" in response.text


def test_cli_refuses_bad_options(keys: Keys) -> None:
    result = keys.cli("create", "--owner", "team-a", "--scopes", "read,root", "--ttl", "soon")
    assert result.returncode == 2 and "--scopes" in result.stderr and "--ttl" in result.stderr
    assert result.stdout == ""


def test_child_keys_die_with_their_parent(keys: Keys) -> None:
    """A key made by a store key (POST /v1/keys) is revoked with it, transitively, at once in the revoking process;
    a key made by an environment key has no parent. Revoked from the CLI, the children go within the cache time."""
    parent = keys.api_create({"scopes": ["admin"], "name": "team admin"})  # made by key-a, an environment key
    child = keys.api_create({"scopes": ["admin"]}, admin=parent["key"])
    grandchild = keys.api_create({"scopes": ["read"]}, admin=child["key"])
    sibling = keys.api_create({"scopes": ["read"]})  # key-a's too: not the parent's
    assert parent["parent_prefix"] is None and sibling["parent_prefix"] is None
    assert (child["parent_prefix"], grandchild["parent_prefix"]) == (parent["prefix"], child["prefix"])
    for made in (child, grandchild):  # working before
        with keys.service.client(made["key"]) as client:
            assert client.get("/v1/jobs").status_code == 200
    with keys.service.client(child["key"]) as client:
        revoked = client.delete(f"/v1/keys/{parent['prefix']}")  # a child may revoke its parent (same owner)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] and revoked.json()["also_revoked"] == [child["prefix"], grandchild["prefix"]]
    for made in (parent, child, grandchild):
        with keys.service.client(made["key"]) as client:
            assert client.get("/v1/jobs").status_code == 401, made["prefix"]
    with keys.service.client(sibling["key"]) as client:
        assert client.get("/v1/jobs").status_code == 200
    with keys.service.client("key-a") as client:
        listed = {k["prefix"]: k for k in client.get("/v1/keys").json()["keys"]}
        assert all(listed[k["prefix"]]["revoked"] for k in (parent, child, grandchild))
        again = client.delete(f"/v1/keys/{parent['prefix']}")
        assert again.status_code == 200 and again.json()["also_revoked"] == []
    # From the store (another process): the children stop within the cache time too.
    root = keys.api_create({"scopes": ["admin"]})
    leaf = keys.api_create({"scopes": ["read"]}, admin=root["key"])
    result = keys.cli("revoke", root["prefix"])
    assert result.returncode == 0 and leaf["prefix"] in result.stdout, result
    with keys.service.client(leaf["key"]) as client:
        assert wait_status(client, "/v1/jobs", 401, within=CACHE_SECONDS + 3) <= CACHE_SECONDS + 1


def test_whoami_names_the_key_with_any_scope(keys: Keys) -> None:
    reader = keys.api_create({"scopes": ["read"], "ttl": "1h"})
    with keys.service.client(reader["key"]) as client:
        me = client.get("/v1/whoami")
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["owner"], body["key"], body["prefix"], body["scopes"], body["auth"]) == (
        "team-a",
        reader["prefix"],
        reader["prefix"],
        ["read"],
        True,
    )
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat(reader["expires_at"])
    assert reader["key"] not in me.text and reader["key"].split("_", 2)[2] not in me.text
    with keys.service.client("key-b") as client:
        env = client.get("/v1/whoami").json()
    assert env == {
        "owner": "team-b",
        "key": "env:team-b",
        "prefix": None,
        "scopes": ["read", "submit", "admin"],
        "expires_at": None,
        "auth": True,
    }
    with keys.service.client("gf_zzzzzzzz_" + "y" * 43) as client:
        assert client.get("/v1/whoami").status_code == 401


def test_the_sdk_makes_lists_and_revokes_keys_sync_and_async(keys: Keys) -> None:
    from ganforge.client import AsyncClient, Client, Unauthorized

    admin = keys.api_create({"scopes": ["admin"], "name": "sdk admin"})["key"]
    with Client(keys.service.url, admin) as client:
        assert client.whoami().owner == "team-a"
        made = client.keys.create(["submit"], name="sdk", ttl="1h")
        keys.made.append(made.key)
        assert made.scopes == ["read", "submit"] and made.parent_prefix == admin[:11] and made.expires_at is not None
        assert made.prefix in {key.prefix for key in client.keys.list()}
        with Client(keys.service.url, made.key) as mine:
            me = mine.whoami()
            assert (me.owner, me.key, me.scopes) == ("team-a", made.prefix, ["read", "submit"])
            revoked = client.keys.revoke(made.prefix)
            assert revoked.revoked and not revoked.active
            with pytest.raises(Unauthorized):
                mine.whoami()

    async def round_trip() -> None:
        async with AsyncClient(keys.service.url, admin) as client:
            assert (await client.whoami()).prefix == admin[:11]
            made = await client.keys.create("read")
            keys.made.append(made.key)
            assert made.prefix in {key.prefix for key in await client.keys.list()}
            async with AsyncClient(keys.service.url, made.key) as mine:
                assert (await mine.whoami()).scopes == ["read"]
                assert (await client.keys.revoke(made.prefix)).revoked
                with pytest.raises(Unauthorized):
                    await mine.whoami()

    asyncio.run(round_trip())


@pytest.mark.slow  # eight CLI processes
def test_the_remote_cli_whoami_and_keys(keys: Keys) -> None:
    admin = keys.api_create({"scopes": ["admin"]})["key"]
    remote = {"GANFORGE_URL": keys.service.url, "GANFORGE_API_KEY": admin}

    def ganforge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ganforge", *args],
            cwd=ROOT,
            env={**keys.service.env, **remote},
            capture_output=True,
            text=True,
            timeout=60,
        )

    me = ganforge("whoami", "--json")
    assert me.returncode == 0 and json.loads(me.stdout)["key"] == admin[:11], me
    assert ganforge("whoami").stdout.startswith(f"team-a: key {admin[:11]} (scopes read, submit, admin;")
    created = ganforge("keys", "create", "--remote", "--scopes", "read", "--name", "remote")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    keys.made.append(key)
    assert key.startswith("gf_") and "shown only now" in created.stderr
    listed = ganforge("keys", "list", "--remote", "--json")
    entry = next(k for k in json.loads(listed.stdout) if k["prefix"] == key[:11])
    assert entry["parent_prefix"] == admin[:11] and entry["scopes"] == ["read"] and "key" not in entry
    refused = ganforge("keys", "create", "--remote", "--owner", "team-b")
    assert refused.returncode == 2 and "--owner" in refused.stderr, refused
    revoked = ganforge("keys", "revoke", "--remote", key[:11])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked
    assert ganforge("keys", "revoke", "--remote", "gf_00000000").returncode == 3
    with keys.service.client(key) as client:
        assert client.get("/v1/whoami").status_code == 401


def test_api_log_never_holds_a_key(keys: Keys) -> None:
    """Last in the module: every key made above was used against this API process."""
    assert len(keys.made) >= 8
    log = "".join(path.read_text() for path in keys.service.data_dir.glob("api*.log"))
    assert "Application startup complete" in log  # the API process's own log, read whole
    for key in keys.made:
        assert key not in log and key.split("_", 2)[2] not in log


def test_expiry_is_kept_in_utc_capped_by_the_creating_key_and_a_huge_ttl_is_a_422(keys: Keys) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    # An offset other than UTC means the same instant on both backends (SQLite keeps only the wall clock).
    east = (datetime.now(timezone(timedelta(hours=5))) + timedelta(hours=1)).replace(microsecond=0)
    created = keys.api_create({"scopes": ["read"], "expires_at": east.isoformat()})
    listed = {
        k["prefix"]: k
        for k in httpx.get(f"{keys.service.url}/v1/keys", headers={"Authorization": "Bearer key-a"}).json()["keys"]
    }
    assert datetime.fromisoformat(listed[created["prefix"]]["expires_at"]) == east.astimezone(UTC)
    with keys.service.client(created["key"]) as client:
        assert client.get("/v1/jobs").status_code == 200
    # A key made by a store key that expires never outlives it.
    parent = keys.api_create({"scopes": ["admin"], "ttl": "1h"})
    child = keys.api_create({"scopes": ["read"]}, admin=parent["key"])
    assert child["expires_at"] is not None
    assert datetime.fromisoformat(child["expires_at"]) <= datetime.fromisoformat(parent["expires_at"])
    with keys.service.client("key-a") as client:
        huge = client.post("/v1/keys", json={"scopes": ["read"], "ttl": "999999999w"})
        assert huge.status_code == 422 and huge.json()["error"]["details"][0]["field"] == "ttl", huge.text


def test_a_store_key_turns_auth_on(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Without GANFORGE_API_KEYS every caller is anonymous until the store holds a key; then a key is needed.

    On the embedded backend only (a deployment of its own, ~15 s): the query it rests on (KeysStore.has_keys) is
    one SELECT, and every other test here runs on both backends.
    """
    backend = "embedded"
    with api_only(backend, tmp_path_factory.mktemp(f"ganforge-keys-on-{backend}"), GANFORGE_API_KEYS="") as service:
        deployment = Keys(service)
        anonymous = httpx.Client(base_url=service.url, timeout=30)
        assert anonymous.get("/v1/jobs").status_code == 200
        me = anonymous.get("/v1/whoami").json()
        assert (me["owner"], me["key"], me["auth"]) == ("anonymous", None, False)
        # With auth off an upload records no key (none was used).
        points = io.BytesIO()
        numpy.savez(points, x=numpy.zeros((16, 2), dtype=numpy.float32))
        upload = anonymous.post("/v1/datasets", files={"file": ("zeros.npz", points.getvalue())})
        assert upload.status_code == 201 and upload.json()["key"] is None, upload.text
        # With auth off no caller may mint the first key over HTTP (it would lock every other client out).
        minted = anonymous.post("/v1/keys", json={"scopes": ["admin"]})
        assert minted.status_code == 403 and "ganforge keys create" in minted.json()["error"]["message"], minted.text
        key = deployment.cli_create("--owner", "anonymous", "--scopes", "admin")
        waited = wait_status(anonymous, "/v1/jobs", 401, within=CACHE_SECONDS + 3)
        assert waited <= CACHE_SECONDS + 1
        with service.client(key) as client:
            assert client.get("/v1/jobs").status_code == 200
            prefix = key[:11]
            assert client.delete(f"/v1/keys/{prefix}").status_code == 200
        time.sleep(CACHE_SECONDS + 0.5)  # auth stays on with every key revoked: revoking never opens the door
        assert anonymous.get("/v1/jobs").status_code == 401
        anonymous.close()


def test_last_used_is_written_at_most_once_a_minute(store: JobStore) -> None:
    """KeysStore.touch_key on PostgreSQL and SQLite: a second use within the minute writes nothing."""
    record, _key = store.create_key(owner="team-a", scopes=["read"])
    first = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    every = timedelta(seconds=60)
    store.touch_key(prefix=record.prefix, at=first, every=every)
    store.touch_key(prefix=record.prefix, at=first + timedelta(seconds=59), every=every)
    found = store.find_key(prefix=record.prefix)
    assert found is not None and as_utc(found.last_used_at) == first
    store.touch_key(prefix=record.prefix, at=first + timedelta(seconds=61), every=every)
    found = store.find_key(prefix=record.prefix)
    assert found is not None and as_utc(found.last_used_at) == first + timedelta(seconds=61)


KEY_PATTERN = re.compile(r"gf_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")
PRODUCTION = {"GANFORGE_ENVIRONMENT": "production", "GANFORGE_API_KEYS": ""}


@pytest.mark.slow
@pytest.mark.parametrize("bare_service", ["embedded"], indirect=True)  # one backend each: the next test's is PG
def test_production_starts_with_only_store_keys_and_refuses_with_none(bare_service: Service) -> None:
    """GANFORGE_ENVIRONMENT=production without GANFORGE_API_KEYS: the API refuses to start while the store holds
    no active key (none, then only a revoked one), and starts once it holds one."""
    service = bare_service
    service.env.update(PRODUCTION)
    deployment = Keys(service)

    def refused() -> str:
        process = subprocess.run(
            [sys.executable, "-m", "ganforge", "api", "--port", str(free_port())],
            cwd=ROOT,
            env=service.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert process.returncode != 0, process
        return process.stdout + process.stderr

    assert "GANFORGE_API_KEYS must be set when GANFORGE_ENVIRONMENT=production" in refused()
    revoked = deployment.cli_create("--owner", "ops", "--scopes", "admin")
    assert deployment.cli("revoke", revoked[:11]).returncode == 0
    assert "refusing to start" in refused()
    key = deployment.cli_create("--owner", "ops", "--scopes", "read")
    service.start_api()
    with service.client(key) as client:
        assert client.get("/v1/whoami").json()["owner"] == "ops"
    assert httpx.get(f"{service.url}/v1/jobs").status_code == 401


@pytest.mark.slow
@pytest.mark.parametrize("bare_service", ["postgres"], indirect=True)
def test_up_prints_a_working_admin_key_once(bare_service: Service) -> None:
    """`ganforge up` in production without GANFORGE_API_KEYS on an empty store prints an admin key (once, in its
    whole output, the API's and workers' logs included), with which a team's key is made; a second `up` (--auth
    too) prints none while that admin key is active."""
    service = bare_service
    service.env.update(PRODUCTION)
    deployment = Keys(service)

    def up(*args: str) -> str:
        log = service.data_dir / f"up-{len(list(service.data_dir.glob('up-*.log')))}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "ganforge", "up", "--port", str(service.port), *args],
                cwd=ROOT,
                env=service.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            text = log.read_text()
            found = KEY_PATTERN.findall(text)
            if found:
                with service.client(found[0]) as client:
                    me = client.get("/v1/whoami").json()
                assert (me["owner"], me["scopes"]) == ("ops", ["read", "submit", "admin"]), me
                team = deployment.cli_create("--owner", "team-x", "--scopes", "submit")
                with service.client(team) as client:
                    # validate_only: the key is accepted with the submit scope, and no job is left training for
                    # the SIGTERM below to hand back (which made each `up` take a minute to stop).
                    checked = client.post("/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC)
                    assert checked.status_code == 200, checked.text
        finally:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return log.read_text()

    first = up("--admin-owner", "ops")
    keys_printed = KEY_PATTERN.findall(first)
    assert len(keys_printed) == 1, first
    deployment.made.append(keys_printed[0])
    # The hint reaches this store: --data-dir for the embedded default's, the same GANFORGE_DATABASE_URL otherwise.
    assert re.search(r"`ganforge (--data-dir \S+ )?keys create --owner TEAM", first), first
    assert ("--data-dir" in first) != ("with the same GANFORGE_DATABASE_URL" in first), first
    second = up("--auth", "--admin-owner", "ops")
    assert not KEY_PATTERN.findall(second), second
    listed = json.loads(deployment.cli("list", "--json").stdout)
    assert [k["owner"] for k in listed if "admin" in k["scopes"]] == ["ops"]
