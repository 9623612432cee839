"""API keys held in the store: create (the key is returned once), find by prefix, list, revoke, mark as used.

A key reads `gf_<8 chars>_<secret>`: `gf_<8 chars>` is its prefix, public (listed, logged, used as its id in
/v1/keys/{prefix}), and the row's lookup key; `<secret>` is 43 URL-safe characters (256 random bits). The store
keeps the SHA-256 of the whole key, never the key: a high-entropy random token needs no slow hash (nothing to
brute-force), and a lookup by prefix plus one hash comparison is all a request costs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.records import ApiKey
from models.store.base import StoreBase, as_utc, serialise, utcnow
from models.store.bounds import storable

KEY_MARK = "gf_"
PREFIX_CHARS = 8
PREFIX_LENGTH = len(KEY_MARK) + PREFIX_CHARS  # "gf_" + 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX = re.compile(rf"{KEY_MARK}[a-z0-9]{{{PREFIX_CHARS}}}")
# The scopes in order: each includes every one before it (submit may read, admin may submit).
SCOPES = ("read", "submit", "admin")
# A key lives at most this long (an expiry past it is refused): far enough, and every datetime stays in range.
TTL_MAX = timedelta(days=3650)
_TTL = re.compile(r"([0-9]{1,9})([smhdw]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TooManyKeys(ValueError):
    """The owner already holds `limit` active keys (GANFORGE_MAX_KEYS_PER_OWNER): no key is made."""

    def __init__(self, owner: str, limit: int) -> None:
        super().__init__(f"{owner!r} already holds {limit} active API keys")
        self.owner, self.limit = owner, limit


class ParentRevoked(ValueError):
    """The store key asked to make a key is revoked or expired (or gone): no key is made."""

    def __init__(self, prefix: str) -> None:
        super().__init__(f"the key {prefix} that would make this key is revoked or expired")
        self.prefix = prefix


def hash_key(key: str) -> str:
    """The hex SHA-256 of a whole key (what the store keeps)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (prefix, key): `gf_<8 of a-z0-9>` and `<prefix>_<43 URL-safe characters>`."""
    prefix = KEY_MARK + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_CHARS))
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str | None:
    """The prefix of a key of our form (`gf_<8 chars>_<secret>`), None for any other text."""
    prefix = key[:PREFIX_LENGTH]
    if len(key) > PREFIX_LENGTH + 1 and key[PREFIX_LENGTH] == "_" and _PREFIX.fullmatch(prefix):
        return prefix
    return None


def is_prefix(text: str) -> bool:
    """Whether `text` is a key prefix's form (`gf_` and 8 of a-z0-9)."""
    return _PREFIX.fullmatch(text) is not None


def normalize_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes named, with every scope they include, in SCOPES order (["submit"] → ["read", "submit"]).

    Raises ValueError naming an unknown scope, or when none is named.
    """
    named = [scope.strip() for scope in scopes]
    unknown = [scope for scope in named if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: the scopes are {', '.join(SCOPES)}")
    if not named:
        raise ValueError(f"give at least one scope of {', '.join(SCOPES)}")
    highest = max(SCOPES.index(scope) for scope in named)
    return list(SCOPES[: highest + 1])


def has_scope(scopes: Iterable[str], needed: str) -> bool:
    """Whether `scopes` include `needed` (a higher scope includes the lower ones)."""
    level = SCOPES.index(needed)
    return any(scope in SCOPES and SCOPES.index(scope) >= level for scope in scopes)


def parse_ttl(text: str) -> timedelta:
    """A time to live such as "30d", "12h", "90m", "3600s" or "3600" (seconds), "2w"; more than 0, at most TTL_MAX.

    Raises ValueError saying the form.
    """
    match = _TTL.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError("must be a whole number and a unit: 3600s, 90m, 12h, 30d or 2w")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2)]
    # Compared as a number first: timedelta itself overflows past about 2.7 million years.
    if seconds <= 0 or seconds > TTL_MAX.total_seconds():
        raise ValueError(f"must be more than 0 and at most {TTL_MAX.days} days")
    return timedelta(seconds=seconds)


def is_active(record: ApiKey, now: datetime | None = None) -> bool:
    """Whether the key lets a caller in now: not revoked, not expired."""
    now = now or utcnow()
    expires = as_utc(record.expires_at)
    return record.revoked_at is None and (expires is None or expires > now)


def _count_active(session: Session, owner: str, now: datetime) -> int:
    # Expiry is checked here, not in SQL, alike on both backends (SQLite keeps datetimes as text); the unrevoked
    # keys of one owner are few (at most GANFORGE_MAX_KEYS_PER_OWNER active, and expired ones).
    unrevoked = session.scalars(select(ApiKey).where(ApiKey.owner == owner, ApiKey.revoked_at.is_(None)))
    return sum(1 for record in unrevoked if is_active(record, now))


class KeysStore(StoreBase):
    """API key records (the keys themselves are never stored)."""

    def create_key(
        self,
        *,
        owner: str,
        scopes: Iterable[str],
        name: str = "",
        expires_at: datetime | None = None,
        parent_prefix: str | None = None,
        max_active: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key for `owner`; returns its record and the key itself (the only time it is known).

        `parent_prefix`: the store key that made this one (POST /v1/keys); revoking it revokes this one too.
        `max_active`: refuse when the owner already holds this many active keys (counted under a per-owner lock, so
        concurrent creations cannot pass it together).
        Raises ValueError for an unknown scope, text the store cannot hold, or an expiry not in the future;
        TooManyKeys past `max_active`; ParentRevoked when the parent key no longer lets anyone in.
        """
        normalized = normalize_scopes(scopes)
        if not storable(owner, name):
            raise ValueError("the owner or name holds text the store cannot hold (NUL or a lone surrogate)")
        now = utcnow()
        # Stored in UTC: SQLite keeps a datetime's wall-clock digits and drops its offset.
        expires_at = expires_at.astimezone(UTC) if expires_at is not None and expires_at.tzinfo else expires_at
        if expires_at is not None and as_utc(expires_at) <= now:
            raise ValueError("the expiry is not in the future")
        for _attempt in range(5):  # 36^8 prefixes: a clash is rare; try again with another
            prefix, key = new_key()
            record = ApiKey(
                prefix=prefix,
                owner=owner,
                name=name,
                scopes=normalized,
                secret_hash=hash_key(key),
                created_at=now,
                expires_at=expires_at,
                last_used_at=None,
                revoked_at=None,
                parent_prefix=parent_prefix,
            )
            try:
                with self.session() as session, session.begin():
                    if parent_prefix is not None:
                        # Locked as revoke_key locks it: a key is never made by one revoked meanwhile.
                        parent = session.scalar(select(ApiKey).where(ApiKey.prefix == parent_prefix).with_for_update())
                        if parent is None or not is_active(parent):
                            raise ParentRevoked(parent_prefix)
                    if max_active is not None:
                        serialise(session, f"ganforge-keys:{owner}")
                        if _count_active(session, owner, now) >= max_active:
                            raise TooManyKeys(owner, max_active)
                    session.add(record)
                return record, key
            except IntegrityError:
                if self.find_key(prefix=prefix) is None:
                    raise
        raise RuntimeError("could not find a free key prefix in 5 tries")

    def find_key(self, *, prefix: str) -> ApiKey | None:
        """The key record with this prefix (revoked and expired ones too), or None."""
        if not is_prefix(prefix):
            return None
        with self.session() as session:
            return session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))

    def list_keys(self, *, owner: str | None = None, limit: int | None = None) -> list[ApiKey]:
        """The owner's keys (every owner's with None), revoked and expired ones too, newest first; at most `limit`."""
        if not storable(owner):
            return []
        with self.session() as session:
            query = select(ApiKey).order_by(ApiKey.seq.desc()).limit(limit)
            if owner is not None:
                query = query.where(ApiKey.owner == owner)
            return list(session.scalars(query))

    def count_active_keys(self, *, owner: str) -> int:
        """How many of the owner's keys let a caller in now (neither revoked nor expired)."""
        if not storable(owner):
            return 0
        with self.session() as session:
            return _count_active(session, owner, utcnow())

    def revoke_key(self, *, prefix: str, owner: str | None = None) -> tuple[ApiKey, list[str]] | None:
        """Revoke the key and, transitively, every key made through it (parent_prefix), in one transaction; they
        stay listed, with their time of revocation. Revoking again changes nothing (but catches a child made since).

        Returns the key's record and the prefixes revoked now (the key's own first when it was active; children
        already revoked are left out); None when no such key is the owner's (`owner` None: any owner's).
        """
        if not is_prefix(prefix) or not storable(owner):
            return None
        with self.session() as session, session.begin():
            query = select(ApiKey).where(ApiKey.prefix == prefix)
            if owner is not None:
                query = query.where(ApiKey.owner == owner)
            # Locked (PostgreSQL; SQLite's writer lock holds the file): a key made through it meanwhile waits.
            record = session.scalar(query.with_for_update())
            if record is None:
                return None
            now, revoked, level, seen = utcnow(), [], [record], {record.prefix}
            while level:  # breadth-first over the keys each level made; `seen` stops any cycle
                for key in level:
                    if key.revoked_at is None:
                        key.revoked_at = now
                        revoked.append(key.prefix)
                children = session.scalars(
                    select(ApiKey)
                    .where(ApiKey.parent_prefix.in_([key.prefix for key in level]))
                    .order_by(ApiKey.seq)
                    .with_for_update()
                )
                level = [child for child in children if child.prefix not in seen]
                seen.update(child.prefix for child in level)
            return record, revoked

    def touch_key(self, *, prefix: str, at: datetime, every: timedelta) -> None:
        """Set the key's last-used time to `at` unless it was set less than `every` before (one short UPDATE)."""
        if not is_prefix(prefix):
            return
        with self.session() as session, session.begin():
            session.execute(
                update(ApiKey)
                .where(ApiKey.prefix == prefix)
                .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at - every))
                .values(last_used_at=at)
            )

    def has_keys(self) -> bool:
        """Whether the store ever held a key (revoked and expired ones count: removing keys never turns auth off)."""
        with self.session() as session:
            return session.scalar(select(ApiKey.seq).limit(1)) is not None

    def has_usable_key(self, *, scope: str | None = None) -> bool:
        """Whether the store holds a key that lets a caller in now (not revoked, not expired), with `scope` when
        given ("admin": one that can make more keys)."""
        now = utcnow()
        with self.session() as session:
            # Few keys are unrevoked at once: expiry and scope (a JSON list) are checked here, alike on both backends.
            unrevoked = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
            return any(
                is_active(record, now) and (scope is None or has_scope(record.scopes, scope)) for record in unrevoked
            )
