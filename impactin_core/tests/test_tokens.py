"""The token cache and the SQLite token store: encryption, expiry, single flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from impactin_core import AuthenticationError, MemoryTokenStore, OAuthToken, TokenCache
from impactin_core._crypto import Sealer, generate_key
from impactin_core._errors import StoreError
from impactin_core._logging import scrub_known
from impactin_core._store import Store
from impactin_core._tokens import RefreshTokenRejected, fingerprint

ACCESS = "access-token-value-7f3a9c"
REFRESH = "refresh-token-value-51be02"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A fetch function that counts grants and rotates refresh tokens."""

    def __init__(
        self, clock: FakeClock, lifetime: float = 3600.0, *, rotate: bool = True
    ) -> None:
        self.clock = clock
        self.rotate = rotate
        self.lifetime = lifetime
        self.grants = 0
        self.seen: list[str | None] = []
        self.valid_refresh: set[str] = {REFRESH}
        self.delay = 0.0

    async def __call__(self, stored: OAuthToken | None) -> OAuthToken:
        used = stored.refresh_token if stored and stored.refresh_token else REFRESH
        self.seen.append(used)
        await asyncio.sleep(self.delay)
        if used not in self.valid_refresh:
            raise RefreshTokenRejected("invalid_grant", platform="p", tenant="t")
        self.grants += 1
        rotated = f"{REFRESH}-{self.grants}" if self.rotate else used
        self.valid_refresh = {rotated}
        return OAuthToken(
            access_token=f"{ACCESS}-{self.grants}",
            refresh_token=rotated,
            expires_at=self.clock() + self.lifetime,
            obtained_at=self.clock(),
        )


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path, key: str) -> Iterator[Store]:
    store = Store(tmp_path / "state.db", Sealer([key], key_name="TEST_KEY"))
    yield store
    store.close()


def token(**changes: object) -> OAuthToken:
    values: dict[str, object] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": 5000.0,
        "obtained_at": 1000.0,
    }
    values.update(changes)
    return OAuthToken(**values)  # type: ignore[arg-type]


def database_bytes(path: Path) -> bytes:
    """Return the main file, the WAL and the shared-memory file, concatenated."""
    parts = [
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
    ]
    return b"".join(part.read_bytes() for part in parts if part.exists())


# -- the SQLite store ------------------------------------------------------------


def test_store_round_trip(store: Store) -> None:
    store.save_token("acme", "workday", token())
    assert store.load_token("acme", "workday") == token()


def test_store_is_per_tenant_and_platform(store: Store) -> None:
    store.save_token("acme", "workday", token())
    assert store.load_token("acme", "benevity") is None
    assert store.load_token("other", "workday") is None


def test_store_delete(store: Store) -> None:
    store.save_token("acme", "workday", token())
    store.delete_token("acme", "workday")
    assert store.load_token("acme", "workday") is None


def test_no_token_byte_in_file(store: Store) -> None:
    store.save_token("acme", "workday", token())
    raw = database_bytes(store.path)
    assert store.path.with_name("state.db-wal").exists()
    assert ACCESS.encode() not in raw
    assert REFRESH.encode() not in raw
    assert b"access_token" not in raw


def test_no_token_byte_after_checkpoint(store: Store) -> None:
    store.save_token("acme", "workday", token())
    store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = database_bytes(store.path)
    assert ACCESS.encode() not in raw
    assert REFRESH.encode() not in raw


def test_rows_show_no_token(store: Store) -> None:
    store.save_token("acme", "workday", token())
    (row,) = store.token_rows()
    assert row["obtained_at"] == 1000.0
    assert row["expires_at"] == 5000.0
    assert row["has_refresh_token"] == 1
    assert ACCESS not in repr(row)


def test_key_rotation_reencrypts(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    old = Store(path, Sealer([key], key_name="K"))
    old.save_token("acme", "workday", token())
    before = old.db.conn.execute("SELECT token_ct FROM tokens").fetchone()[0]
    old.close()
    new_key = generate_key()
    both = Store(path, Sealer([new_key, key], key_name="K"))
    rotated = both.rotate_key()
    after = both.db.conn.execute("SELECT token_ct FROM tokens").fetchone()[0]
    both.close()
    only_new = Store(path, Sealer([new_key], key_name="K"))
    loaded = only_new.load_token("acme", "workday")
    only_new.close()
    # The token plus the store's key check.
    assert rotated == 2
    assert after != before
    assert loaded == token()


def test_old_key_fails_after_rotation(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    new_key = generate_key()
    first = Store(path, Sealer([key], key_name="K"))
    first.save_token("acme", "workday", token())
    first.close()
    rotating = Store(path, Sealer([new_key, key], key_name="K"))
    rotating.rotate_key()
    rotating.close()
    # Opening checks the key first; a store without that check fails on read.
    with pytest.raises(StoreError):
        only_old = Store(path, Sealer([key], key_name="K"))
        try:
            only_old.load_token("acme", "workday")
        finally:
            only_old.close()


def test_lease_excludes_other_owner(store: Store) -> None:
    assert store.try_lock_token("acme", "workday", "a", until=4e9)
    assert not store.try_lock_token("acme", "workday", "b", until=4e9)
    store.unlock_token("acme", "workday", "a")
    assert store.try_lock_token("acme", "workday", "b", until=4e9)


def test_expired_lease_taken_over(store: Store) -> None:
    assert store.try_lock_token("acme", "workday", "a", until=1.0)
    assert store.try_lock_token("acme", "workday", "b", until=4e9)


def test_unlock_by_other_owner_ignored(store: Store) -> None:
    store.try_lock_token("acme", "workday", "a", until=4e9)
    store.unlock_token("acme", "workday", "b")
    assert not store.try_lock_token("acme", "workday", "b", until=4e9)


# -- the cache -------------------------------------------------------------------


async def test_get_fetches_once_then_reuses(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    first = await cache.get("acme", "workday", issuer)
    second = await cache.get("acme", "workday", issuer)
    assert first == second
    assert issuer.grants == 1


async def test_obtained_token_never_reaches_a_log_line(store: Store) -> None:
    clock = FakeClock()
    cache = TokenCache(store, clock=clock)

    obtained = await cache.get("acme", "workday", Issuer(clock))

    assert scrub_known(f"sent {obtained.access_token}") == "sent [secret]"
    assert scrub_known(f"sent {obtained.refresh_token}") == "sent [secret]"


@pytest.mark.parametrize(
    ("elapsed", "grants"),
    [
        pytest.param(3600 - 61, 1, id="61s-before-expiry"),
        pytest.param(3600 - 60, 2, id="60s-before-expiry"),
        pytest.param(3600 + 1, 2, id="expired"),
    ],
)
async def test_refresh_ahead_of_expiry(
    store: Store, elapsed: float, grants: int
) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    await cache.get("acme", "workday", issuer)
    clock.now += elapsed
    await cache.get("acme", "workday", issuer)
    assert issuer.grants == grants


async def test_custom_leeway(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock, leeway=600)
    await cache.get("acme", "workday", issuer)
    clock.now += 3600 - 599
    await cache.get("acme", "workday", issuer)
    assert issuer.grants == 2


async def test_rotated_refresh_token_persisted(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    await cache.get("acme", "workday", issuer)
    await cache.refresh("acme", "workday", issuer)
    stored = store.load_token("acme", "workday")
    assert stored is not None
    assert stored.refresh_token == f"{REFRESH}-2"
    assert issuer.seen == [REFRESH, f"{REFRESH}-1"]


async def test_refresh_without_refresh_token_keeps_stored(store: Store) -> None:
    clock = FakeClock()
    cache = TokenCache(store, clock=clock)
    first = OAuthToken(
        access_token="at-1",
        expires_at=clock.now + 3600,
        refresh_token="rt-kept",
        obtained_at=clock.now,
        source_fingerprint="fp-1",
    )
    store.save_token("acme", "workday", first)
    used: list[str | None] = []

    async def fetch(stored: OAuthToken | None) -> OAuthToken:
        used.append(stored.refresh_token if stored else None)
        return OAuthToken(
            access_token=f"at-{len(used) + 1}",
            expires_at=clock.now + 3600,
            obtained_at=clock.now,
        )

    await cache.refresh("acme", "workday", fetch)
    await cache.refresh("acme", "workday", fetch)

    stored = store.load_token("acme", "workday")
    assert stored is not None
    assert stored.access_token == "at-3"
    assert stored.refresh_token == "rt-kept"
    assert stored.source_fingerprint == "fp-1"
    assert used == ["rt-kept", "rt-kept"]


async def test_concurrent_callers_share_refresh(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    issuer.delay = 0.05
    cache = TokenCache(store, clock=clock)
    tokens = await asyncio.gather(
        *(cache.get("acme", "workday", issuer) for _ in range(20))
    )
    assert issuer.grants == 1
    assert len({t.access_token for t in tokens}) == 1


async def test_concurrent_forced_refresh_once(store: Store) -> None:
    """Callers that all saw one rejected token refresh it once, not once each."""
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    await cache.get("acme", "workday", issuer)
    issuer.delay = 0.05
    tokens = await asyncio.gather(
        *(cache.get("acme", "workday", issuer, force=True) for _ in range(5))
    )
    assert issuer.grants == 2
    assert {t.access_token for t in tokens} == {f"{ACCESS}-2"}


def test_cache_serves_one_event_loop_after_another(store: Store) -> None:
    """A host may run each batch in its own asyncio.run with one runtime."""
    clock = FakeClock()
    issuer = Issuer(clock)
    issuer.delay = 0.01
    cache = TokenCache(store, clock=clock)

    async def five_callers(force: bool) -> set[str]:
        tokens = await asyncio.gather(
            *(cache.get("acme", "workday", issuer, force=force) for _ in range(5))
        )
        return {token.access_token for token in tokens}

    first = asyncio.run(five_callers(force=False))
    clock.now += 7200.0
    second = asyncio.run(five_callers(force=False))
    third = asyncio.run(five_callers(force=True))

    assert (first, second, third) == (
        {f"{ACCESS}-1"},
        {f"{ACCESS}-2"},
        {f"{ACCESS}-3"},
    )
    assert issuer.grants == 3


async def test_two_caches_one_file_share_refresh(tmp_path: Path, key: str) -> None:
    """Two caches on two connections to one file behave like two processes."""
    path = tmp_path / "state.db"
    stores = [Store(path, Sealer([key], key_name="K")) for _ in range(2)]
    clock = FakeClock()
    # Without rotation a second refresh would succeed, so only the lease
    # between the two stores keeps the count at one.
    issuer = Issuer(clock, rotate=False)
    issuer.delay = 0.1
    caches = [TokenCache(store, clock=clock, lease_poll=0.01) for store in stores]
    try:
        tokens = await asyncio.gather(
            *(cache.get("acme", "workday", issuer) for cache in caches * 3)
        )
    finally:
        for store in stores:
            store.close()
    assert issuer.grants == 1
    assert len({t.access_token for t in tokens}) == 1


async def test_restart_reuses_stored_token(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    issuer = Issuer(clock)
    first = Store(path, Sealer([key], key_name="K"))
    await TokenCache(first, clock=clock).get("acme", "workday", issuer)
    first.close()
    second = Store(path, Sealer([key], key_name="K"))
    reused = await TokenCache(second, clock=clock).get("acme", "workday", issuer)
    second.close()
    assert issuer.grants == 1
    assert reused.access_token == f"{ACCESS}-1"


async def test_invalid_grant_rereads_store() -> None:
    """A refresh token rotated by another worker is found and used."""
    clock = FakeClock()
    issuer = Issuer(clock)
    memory = MemoryTokenStore()
    cache = TokenCache(memory, clock=clock)
    await cache.get("acme", "workday", issuer)
    stale = memory.load_token("acme", "workday")
    assert stale is not None

    class RotatingElsewhere:
        """Store the other worker's rotation while this worker's call fails."""

        async def __call__(self, stored: OAuthToken | None) -> OAuthToken:
            if stored is stale:
                await issuer(stale)
                memory.save_token(
                    "acme",
                    "workday",
                    token(
                        access_token="expired",
                        refresh_token=f"{REFRESH}-2",
                        expires_at=0.0,
                    ),
                )
                return await issuer(stale)
            return await issuer(stored)

    fresh = await cache.refresh("acme", "workday", RotatingElsewhere())
    assert fresh.access_token == f"{ACCESS}-3"
    assert issuer.seen == [REFRESH, f"{REFRESH}-1", f"{REFRESH}-1", f"{REFRESH}-2"]


async def test_invalid_grant_names_tenant_and_platform(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    issuer.valid_refresh = set()
    cache = TokenCache(store, clock=clock)
    with pytest.raises(AuthenticationError) as caught:
        await cache.get("acme", "workday", issuer)
    message = str(caught.value)
    assert isinstance(caught.value, RefreshTokenRejected)
    assert "'acme'" in message
    assert "'workday'" in message
    assert "invalid_grant" in message
    assert REFRESH not in message
    assert issuer.seen == [REFRESH]


async def test_invalidate_forces_fetch(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    await cache.get("acme", "workday", issuer)
    cache.invalidate("acme", "workday")
    assert cache.load("acme", "workday") is None
    # The next fetch starts again from the configured refresh token.
    issuer.valid_refresh.add(REFRESH)
    await cache.get("acme", "workday", issuer)
    assert issuer.grants == 2


async def test_saved_token_is_used(store: Store) -> None:
    clock = FakeClock()
    issuer = Issuer(clock)
    cache = TokenCache(store, clock=clock)
    cache.save("acme", "workday", token())
    used = await cache.get("acme", "workday", issuer)
    assert used == token()
    assert issuer.grants == 0


def test_fingerprint_hides_secret() -> None:
    assert REFRESH not in fingerprint(REFRESH)
    assert fingerprint(REFRESH) == fingerprint(REFRESH)
    assert fingerprint(REFRESH) != fingerprint(REFRESH + "x")


def test_repr_hides_tokens() -> None:
    assert ACCESS not in repr(token())
    assert REFRESH not in repr(token())


# -- the command line ------------------------------------------------------------


@pytest.fixture
def workspace(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("TOKENS_STORE_KEY", key)
    monkeypatch.setenv("TOKENS_ACME_KEY", "acme-tenant-secret")
    (tmp_path / "impactin.toml").write_text(
        "\n".join(
            [
                "[store]",
                'path = "state.db"',
                'key_env = "TOKENS_STORE_KEY"',
                "[tenants.acme]",
                'key_env = "TOKENS_ACME_KEY"',
                "[tenants.acme.platforms.workday]",
                'base_url = "http://127.0.0.1:9"',
                'options = { tenant_name = "acme1" }',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def invoke(*args: str) -> str:
    from click.testing import CliRunner

    from impactin_core._cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def seed(folder: Path, key: str, **changes: object) -> None:
    store = Store(folder / "state.db", Sealer([key], key_name="K"))
    store.save_token("acme", "workday", token(**changes))
    store.close()


def test_cli_list_shows_age_not_token(workspace: Path, key: str) -> None:
    import time

    now = time.time()
    seed(workspace, key, obtained_at=now - 125, expires_at=now + 3475)
    output = invoke("tokens", "list")
    assert "acme" in output
    assert "workday" in output
    assert "2m0" in output
    assert "57m" in output
    assert ACCESS not in output
    assert REFRESH not in output


def test_cli_invalidate_deletes(workspace: Path, key: str) -> None:
    seed(workspace, key)
    output = invoke("tokens", "invalidate", "--tenant", "acme", "--platform", "workday")
    store = Store(workspace / "state.db", Sealer([key], key_name="K"))
    remaining = store.load_token("acme", "workday")
    store.close()
    assert "Deleted" in output
    assert remaining is None


def test_cli_refresh_unknown_platform(workspace: Path) -> None:
    from click.testing import CliRunner

    from impactin_core._cli import main

    result = CliRunner().invoke(
        main, ["tokens", "refresh", "--tenant", "acme", "--platform", "nope"]
    )
    assert result.exit_code != 0
    assert "tenants.acme.platforms.nope" in result.output


def test_cli_keys_rotate(
    workspace: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(workspace, key)
    new_key = generate_key()
    monkeypatch.setenv("TOKENS_STORE_KEY", f"{new_key},{key}")
    output = invoke("keys", "rotate")
    store = Store(workspace / "state.db", Sealer([new_key], key_name="K"))
    loaded = store.load_token("acme", "workday")
    store.close()
    assert "Re-encrypted 2 stored values" in output
    assert loaded == token()


def test_cache_drops_locks_of_closed_loops(store: Store) -> None:
    """A loop whose refresh was waited on is not kept after the loop closes."""
    clock = FakeClock()
    issuer = Issuer(clock)
    issuer.delay = 0.001
    cache = TokenCache(store, clock=clock)

    async def three_forced_callers() -> None:
        await asyncio.gather(
            *(cache.get("acme", "workday", issuer, force=True) for _ in range(3))
        )

    for _ in range(20):
        asyncio.run(three_forced_callers())

    assert len(cache._locks) <= 1
