"""``redis://``, ``rediss://``: state every host that reaches one Redis shares.

:class:`RedisBackend` keeps the rate limit's permit logs (each permit one Lua
script, one round trip, timed by the Redis server's clock, so hosts whose
clocks differ still share one timeline) and the token cache's entries
(``SET NX PX`` locks). Every key expires: nothing outlives its use. Needs
the ``redis`` extra.

``redis+sentinel://`` reaches the master the Sentinels name (each new
connection asks them, so a failover is followed once the old master's
connection fails; the fallback covers the calls meanwhile) and
``redis+cluster://`` a Redis Cluster: a limiter key's keys and a token entry's
share a hash tag, so every script and transaction stays in one slot, and
``SCAN`` visits every master.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from ..clock import SYSTEM, Clock
from ..urls import safe_for_message
from .base import (
    DEFAULT_HOLD,
    STORE_MIN_TIME,
    STORE_TIMEOUT,
    WAIT_LEASE,
    CircuitRecord,
    Grant,
    PermitHolder,
    PermitState,
    ProcessLock,
    RuleValue,
    StorageURL,
    TokenEntry,
    budget,
    holder,
    missing_extra,
)
from .windows import MAX_HOLD, MAX_PAUSE, MIN_HOLD, learned_ttl, longest_pause

__all__ = [
    "HAURL",
    "RedisBackend",
    "RedisConnection",
    "open_redis",
    "redis_module",
    "split_ha_url",
]

#: The longest a key lives, in seconds (a token of 1e20 seconds is kept a week).
MAX_TTL = 7 * 24 * 3600.0


def redis_module() -> Any:
    """The ``redis`` package, or the one-line error naming the extra."""
    try:
        import redis  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise missing_extra("redis", "redis", "a redis:// storage URL") from None
    return redis


def open_redis(storage: StorageURL, *, timeout: float = STORE_TIMEOUT) -> Any:
    """A Redis client for ``storage`` whose connecting and reading each take at most
    ``timeout`` seconds, without redis-py's own retries (a store must not hang a call)."""
    redis = redis_module()
    from redis.backoff import NoBackoff  # noqa: PLC0415 - an optional extra
    from redis.retry import Retry  # noqa: PLC0415

    bounded: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if storage.scheme == "redis+sentinel":
        return _open_sentinel(storage, bounded)
    if storage.scheme == "redis+cluster":
        return _open_cluster(storage, bounded)
    return redis.Redis.from_url(storage.url, health_check_interval=30, **bounded)


class HAURL(NamedTuple):
    """A ``redis+sentinel://`` or ``redis+cluster://`` URL taken apart (as ``limits``
    writes them): its credentials, its ``host:port`` list, and the path's parts
    (Sentinel: the service's name, then the database)."""

    username: str | None
    password: str | None
    nodes: list[tuple[str, int]]
    path: list[str]


def split_ha_url(url: str, default_port: int) -> HAURL:
    """``scheme://[[user]:password@]host[:port][,host[:port]...][/path]`` taken apart.

    :raises ValueError: a host missing, or a port that is not a number (the
        message never shows the URL: the caller's does, made safe).
    """
    rest = url.partition("://")[2].split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for node in hosts.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon:
            host, port = port, ""
        host = host.strip("[]")
        if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise ValueError("each node must be host:port")
        nodes.append((host, int(port) if port else default_port))
    return HAURL(username, password, nodes, [part for part in path.split("/") if part])


def _auth(parts: HAURL) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if parts.username:
        found["username"] = parts.username
    if parts.password is not None:
        found["password"] = parts.password
    return found


def _open_sentinel(storage: StorageURL, bounded: dict[str, Any]) -> Any:
    """The client of the master Sentinel names for the service: each new connection
    asks the Sentinels again, so a failover is followed once the old master's
    connection fails (that call is the fallback's to cover)."""
    from redis.sentinel import Sentinel  # noqa: PLC0415 - an optional extra

    parts = split_ha_url(storage.url, 26379)
    service, database = parts.path[0], int(parts.path[1]) if len(parts.path) > 1 else 0
    auth = _auth(parts)
    sentinel = Sentinel(parts.nodes, sentinel_kwargs={**auth, **bounded})
    return sentinel.master_for(service, db=database, health_check_interval=30, **auth, **bounded)


def _open_cluster(storage: StorageURL, bounded: dict[str, Any]) -> Any:
    """A Redis Cluster client: keys go to their slot's master, ``SCAN`` visits every
    master. No node answering is a ``ConnectionError`` (an outage), as one server's is."""
    redis = redis_module()
    from redis.cluster import ClusterNode, RedisCluster  # noqa: PLC0415 - an optional extra

    node: Any = ClusterNode

    parts = split_ha_url(storage.url, 6379)
    try:
        return RedisCluster(
            startup_nodes=[node(host, port) for host, port in parts.nodes],
            health_check_interval=30,
            **_auth(parts),
            **bounded,
        )
    except redis.exceptions.RedisClusterException as exc:
        if isinstance(exc, redis.exceptions.ConnectionError):
            raise
        raise redis.exceptions.ConnectionError(
            f"no node of the Redis Cluster {storage.shown} answered"
        ) from None


#: Timeouts a Redis client is made for: an operation uses the longest that fits its
#: time (socket timeouts belong to a connection, so each gets a pool of its own).
_REDIS_TIMEOUTS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, STORE_MIN_TIME)


class RedisConnection:
    """A Redis client per process, opened on first use, with Lua scripts registered.

    Each operation takes a ``timeout`` (seconds, default :data:`STORE_TIMEOUT`)
    that bounds connecting, sending and reading: a server that accepts and
    never answers costs no more. redis-py's own retries are off (a store that
    fails is the caller's fallback to handle, at once).

    :param scripts: name to Lua source; each runs with ``EVALSHA`` (one round trip).
    """

    def __init__(self, storage: StorageURL, scripts: dict[str, str]) -> None:
        self._storage = storage
        self._sources = scripts
        self._lock = ProcessLock()
        self._clients: dict[float, tuple[Any, dict[str, Any]]] = {}
        self._pid = 0

    def _for(self, timeout: float | None) -> tuple[Any, dict[str, Any]]:
        seconds = budget(timeout)
        bound = next(t for t in _REDIS_TIMEOUTS if t <= seconds + 1e-9)
        found = self._clients.get(bound) if self._pid == os.getpid() else None
        if found is None:
            with self._lock:
                if self._pid != os.getpid():
                    self._clients = {}  # a forked child opens its own
                    self._pid = os.getpid()
                found = self._clients.get(bound)
                if found is None:
                    client = open_redis(self._storage, timeout=bound)
                    scripts = {
                        name: client.register_script(text) for name, text in self._sources.items()
                    }
                    found = self._clients[bound] = (client, scripts)
        return found

    def client(self, timeout: float | None = None) -> Any:
        """The client of this process whose socket timeouts fit ``timeout``."""
        return self._for(timeout)[0]

    def run(self, name: str, keys: list[str], args: list[Any], timeout: float | None = None) -> Any:
        """Run the script ``name`` within ``timeout`` seconds."""
        return self._for(timeout)[1][name](keys=keys, args=args)

    def close(self) -> None:
        """Close this process's clients."""
        with self._lock:
            if self._pid == os.getpid():
                for client, _ in self._clients.values():
                    client.close()
            self._clients = {}


# One round trip per permit: the whole decision runs inside Redis, on its clock.
# KEYS: permits not over (sorted set: member -> time; a sent one's time is when it
# was sent), ended permits (sorted set: member -> end), pause, learned rule (hash),
# the permits' counter, the leases of the waiting ones (sorted set: member -> until
# when it holds unless renewed; a member not there was sent), holders (hash: member
# -> "host|pid|since").
# A member is "<n>:<hold>:<random>", n counting up: the order permits were asked for.
# ARGV: limit (0: none), period, max_wait, the member to confirm ('' for a new
# permit), the longest pause of the configured rule, MAX_PAUSE, the hold, MIN_HOLD,
# a random suffix (a counter that expired and started again never repeats a member),
# the holder's host, its pid, WAIT_LEASE.
# Returns {wait, member ('' when nothing was reserved), firm ('1' or '0'), period}.
_RESERVE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local member = ARGV[4]
local learned = redis.call('HMGET', KEYS[4], 'limit', 'period')
if learned[1] then
  limit = tonumber(learned[1])
  period = tonumber(learned[2])
end
local start = now
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now + tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[3])  -- stale
elseif paused > start then
  start = paused
end
local function number(m) return tonumber(string.match(m, '^(%d+):')) end
local function hold(m) return tonumber(string.match(m, '^%d+:([^:]+)')) end
-- a holder that died waiting sent nothing: its reservation lapses
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
for _, m in ipairs(lapsed) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[6], m)
  redis.call('HDEL', KEYS[7], m)
end
-- a holder that never said: its permit ended at its expiry
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[8]), 'WITHSCORES')
for i = 1, #old, 2 do
  local expires = tonumber(old[i + 1]) + hold(old[i])
  if expires <= now and not redis.call('ZSCORE', KEYS[6], old[i]) then
    redis.call('ZREM', KEYS[1], old[i])
    redis.call('HDEL', KEYS[7], old[i])
    redis.call('ZADD', KEYS[2], expires, old[i])
  end
end
if member ~= '' then
  if not redis.call('ZSCORE', KEYS[1], member) then
    member = ''  -- forgotten, or lapsed: reserve anew
  elseif not redis.call('ZSCORE', KEYS[6], member) then
    return {'0', member, '1', tostring(period)}  -- sent already
  end
end
if limit <= 0 then return {tostring(start - now), member, '1', '0'} end
-- stale: further ahead than any reservation could lie (a clock that was wrong)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (now + period + tonumber(ARGV[6])), '+inf')
-- ended a period ago: no longer counts
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - period)
local firm = true
local floors = {}
local ends = nil
if member == '' then  -- every permit was asked for before this one
  local flying = redis.call('ZCARD', KEYS[1])
  if flying >= limit then
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 2, #all, 2 do floors[#floors + 1] = math.max(tonumber(all[i]), now) end
  else
    local k = limit - flying
    if redis.call('ZCARD', KEYS[2]) >= k then
      local kth = redis.call('ZREVRANGE', KEYS[2], k - 1, k - 1, 'WITHSCORES')
      start = math.max(start, tonumber(kth[2]) + period)
    end
  end
else  -- only those asked for before it
  local before = number(member)
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    if number(all[i]) < before then
      floors[#floors + 1] = math.max(tonumber(all[i + 1]), now)
    end
  end
  if #floors < limit then
    ends = {}
    local ended = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #ended, 2 do
      if number(ended[i]) < before then ends[#ends + 1] = tonumber(ended[i + 1]) end
    end
    local k = limit - #floors
    if #ends >= k then start = math.max(start, ends[#ends - k + 1] + period) end
  end
end
if #floors >= limit then  -- a guess until one of them ends
  table.sort(floors, function(a, b) return a > b end)
  start = math.max(start, floors[limit] + period)
  firm = false
end
local wait = start - now
if wait > tonumber(ARGV[3]) then
  if member ~= '' then
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[6], member)
    redis.call('HDEL', KEYS[7], member)
  end
  return {tostring(wait), '', '0', tostring(period)}
end
local sent = firm and wait <= 0  -- sent from now; else waiting, held while renewed
local who = ARGV[10] .. '|' .. ARGV[11] .. '|' .. string.format('%.6f', now)
if member == '' then
  member = redis.call('INCR', KEYS[5]) .. ':' .. ARGV[7] .. ':' .. ARGV[9]
  redis.call('ZADD', KEYS[1], sent and now or start, member)
  redis.call('HSET', KEYS[7], member, who)
else
  redis.call('ZADD', KEYS[1], 'XX', sent and now or start, member)
  if sent then redis.call('HSET', KEYS[7], member, who) end
end
if sent then
  redis.call('ZREM', KEYS[6], member)
else
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[12]), member)
end
local ttl = math.ceil((wait + hold(member) + period) * 1000) + 1000
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7]}) do
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return {tostring(wait), member, firm and '1' or '0', tostring(period)}
"""

# KEYS: permits in flight, ended permits, the counter, leases, holders. ARGV: the
# member, its period.
_FINISH = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[2], now, ARGV[1])
local ttl = math.ceil(tonumber(ARGV[2]) * 1000) + 1000
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return 1
"""

# KEYS: pause. ARGV: seconds (already at most the longest pause). The later end wins.
_PAUSE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > now + tonumber(ARGV[2]) then current = 0 end  -- stale
if untl > current then
  local ttl = math.ceil(tonumber(ARGV[1]) * 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.6f', untl), 'PX', ttl)
end
return 1
"""

# KEYS: pause. ARGV: the longest pause. Returns seconds left, as text.
_PAUSED_FOR = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > now + tonumber(ARGV[1]) then return '0' end  -- stale
return tostring(math.max(0, untl - now))
"""


# KEYS: a token entry's lock. ARGV: its owner. Deletes it only if that owner holds it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBackend:
    """Permit logs and token entries in Redis, shared by every host that reaches it
    (``redis://``, ``rediss://``; ``redis+sentinel://``, the master Sentinel names,
    followed across a failover; ``redis+cluster://``, a Redis Cluster).

    A permit is one Lua script (``EVALSHA``): one round trip, atomic on the
    server, timed by its clock. Keys share a hash tag per limiter key (and per
    token entry), so a Redis Cluster keeps them together.

    :param storage: the parsed URL.
    :param clock: unused: Redis keeps time by its own clock.
    """

    def __init__(self, storage: StorageURL, clock: Clock = SYSTEM) -> None:
        self.storage = storage
        self._redis = RedisConnection(
            storage,
            {
                "reserve": _RESERVE,
                "finish": _FINISH,
                "pause": _PAUSE,
                "paused_for": _PAUSED_FOR,
                "unlock": _UNLOCK,
            },
        )

    @classmethod
    def check_url(cls, storage: StorageURL, what: str) -> StorageURL:
        """Refuse a URL without a host or with a database that is not a number, and
        say now when the ``redis`` extra is missing."""
        url = storage.url
        if storage.scheme in ("redis+sentinel", "redis+cluster"):
            _check_ha_url(storage, what)
            redis_module()
            return storage
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{what} is not a valid Redis URL: {safe_for_message(url)}") from None
        if not parts.hostname:
            raise ValueError(f"{what} must name the Redis host: {safe_for_message(url)}")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(
                f"{what}: the Redis database must be a number, as in "
                f"'redis://{parts.hostname}:{port or 6379}/0'; got {safe_for_message(url)}"
            )
        redis_module()  # a missing extra is a configuration error: say so now
        return storage

    @staticmethod
    def _keys(key: str) -> list[str]:
        # one hash tag: a limiter key's keys share one cluster slot (its scripts are multi-key)
        tag = "rbe:{" + key.replace("}", ")") + "}"
        return [
            f"{tag}:flight",
            f"{tag}:ended",
            f"{tag}:pause",
            f"{tag}:rule",
            f"{tag}:n",
            f"{tag}:lease",
            f"{tag}:who",
        ]

    def acquire(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        return self._reserve(key, rule, max_wait, timeout, hold=hold, member="")

    def confirm(
        self,
        key: str,
        stamp: Any,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        return self._reserve(key, rule, max_wait, timeout, hold=hold, member=stamp[0])

    def _reserve(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None,
        *,
        hold: float,
        member: str,
    ) -> Grant:
        limit, period = rule if rule is not None else (0, 0.0)
        wait, reserved, firm, used = self._redis.run(
            "reserve",
            self._keys(key),
            [
                limit,
                repr(float(period)),
                repr(min(float(max_wait), MAX_PAUSE)),
                member,
                repr(longest_pause(rule)),
                repr(MAX_PAUSE),
                repr(float(min(max(hold, MIN_HOLD), MAX_HOLD))),
                repr(MIN_HOLD),
                os.urandom(4).hex(),
                *holder(),
                repr(WAIT_LEASE),
            ],
            timeout,
        )
        stamp = (reserved.decode(), float(used)) if reserved else None
        return Grant(float(wait), stamp, firm == b"1")

    def finish(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        member, period = stamp
        keys = self._keys(key)
        self._redis.run(
            "finish", [keys[0], keys[1], keys[4], keys[5], keys[6]], [member, repr(period)], timeout
        )

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        keys = self._keys(key)
        pipe = self._redis.client(timeout).pipeline(transaction=True)
        pipe.zrem(keys[0], stamp[0])
        pipe.zrem(keys[1], stamp[0])
        pipe.zrem(keys[5], stamp[0])
        pipe.hdel(keys[6], stamp[0])
        pipe.execute()

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        longest = longest_pause(rule)
        self._redis.run(
            "pause",
            [self._keys(key)[2]],
            [repr(float(min(seconds, longest))), repr(longest)],
            timeout,
        )

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        return float(
            self._redis.run(
                "paused_for", [self._keys(key)[2]], [repr(longest_pause(rule))], timeout
            )
        )

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        rule_key = self._keys(key)[3]
        pipe = self._redis.client(timeout).pipeline(transaction=True)
        pipe.hset(rule_key, mapping={"limit": limit, "period": repr(float(period))})
        pipe.pexpire(rule_key, int(learned_ttl(period) * 1000))
        pipe.execute()

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        return self.survey(timeout)[0]

    def survey(
        self, timeout: float | None = None
    ) -> tuple[list[PermitState], list[tuple[str, str]]]:
        """:meth:`snapshot`, and the keys it skipped.

        A key under ``rbe:{...}:`` that is not what this package writes there
        (another type, a value that is not a number, a name it never makes) is
        skipped, not fatal: the rest is read, and the key is listed as
        ``(name, why)``. Only a store that cannot be read at all raises.
        """
        client = self._redis.client(timeout)
        now = _seconds(client.time())
        found: dict[str, dict[str, Any]] = {}
        skipped: list[tuple[str, str]] = []
        for raw in client.scan_iter(match="rbe:{*}:*", count=500):
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                skipped.append((raw.decode("utf-8", "backslashreplace"), "a name not in UTF-8"))
                continue
            tag, _, kind = name.rpartition(":")
            if not tag.endswith("}") or kind not in _KEY_TYPES:
                skipped.append((name, "a name this package does not write"))
                continue
            try:
                state = _key_state(client, raw, kind, now)
            except redis_module().ResponseError as exc:  # WRONGTYPE, or one refused
                skipped.append((name, _wrong(client, raw, kind, exc)))
                continue
            except (ValueError, TypeError):
                skipped.append((name, "a value that is not a number"))
                continue
            if state:
                found.setdefault(tag[len("rbe:{") : -1], {}).update(state)
        states = [PermitState(key, **found[key]) for key in sorted(found)]
        return states, sorted(skipped)

    # -- tokens -------------------------------------------------------------------

    @staticmethod
    def _token_key(name: str) -> str:
        return "rbe:token:{" + name + "}"

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        value: bytes | None = self._redis.client(timeout).get(self._token_key(name))
        return value

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        self._redis.client(timeout).set(self._token_key(name), blob, px=_milliseconds(ttl))

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        key = self._token_key(name) + ":lock"
        return bool(self._redis.client(timeout).set(key, owner, nx=True, px=_milliseconds(ttl)))

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        self._redis.run("unlock", [self._token_key(name) + ":lock"], [owner], timeout)

    def token_entries(self, timeout: float | None = None) -> list[TokenEntry]:
        """Every entry not expired, by name, sealed contents unread."""
        client = self._redis.client(timeout)
        found = []
        for key in client.scan_iter(match="rbe:token:{*}", count=500):
            name = key.decode("utf-8", "backslashreplace")[len("rbe:token:{") : -1]
            left = client.pttl(key)
            if left > 0:
                found.append(TokenEntry(name, left / 1000))
        return sorted(found)

    # -- the store ----------------------------------------------------------------

    def exists(self, timeout: float | None = None) -> bool:
        """Always: a Redis server keeps its keys once it answers (:meth:`check`)."""
        return True

    def check(self, timeout: float | None = None) -> None:
        """``PING`` the server."""
        self._redis.client(timeout).ping()

    def unreachable(self, exc: BaseException) -> bool:
        """An outage: the server cannot be reached or does not answer in time
        (``ConnectionError``, ``TimeoutError``, any :class:`OSError`), is loading its
        data, refuses writes for now (a read-only replica, out of memory, a cluster
        that is down or resharding, no master Sentinel knows, no cluster node that
        answers). Any other reply refused (``WRONGTYPE`` from a
        key this package did not write, a script's error) is a bug."""
        return isinstance(exc, (OSError, *_outage_errors()))

    def close(self) -> None:
        self._redis.close()

    # -- circuits -----------------------------------------------------------------

    @staticmethod
    def _circuit_key(record: CircuitRecord) -> str:
        return f"rbe:circuit:{record.host}|{record.holder_host}|{record.pid}"

    def publish_circuit(
        self, record: CircuitRecord, ttl: float, timeout: float | None = None
    ) -> None:
        """Keep ``record`` as JSON under ``rbe:circuit:{host}|{holder host}|{pid}``,
        expiring after ``ttl`` seconds (Redis's clock)."""
        value = json.dumps(
            {
                "host": record.host,
                "state": record.state,
                "since": record.since,
                "failures": record.failures,
                "holder_host": record.holder_host,
                "pid": record.pid,
                "published": record.published,
            }
        )
        self._redis.client(timeout).set(self._circuit_key(record), value, px=_milliseconds(ttl))

    def circuit_records(self, timeout: float | None = None) -> list[CircuitRecord]:
        """Every record not yet expired, sorted by host, then holder (a value that is
        not a record this package writes is skipped)."""
        client = self._redis.client(timeout)
        names = list(client.scan_iter(match="rbe:circuit:*", count=500))
        found = []
        for start in range(0, len(names), 500):
            pipe = client.pipeline(transaction=False)  # (one round trip; any cluster slot)
            for name in names[start : start + 500]:
                pipe.get(name)
            for value in pipe.execute():
                record = _circuit_record(value)
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda r: (r.host, r.holder_host, r.pid))


def _check_ha_url(storage: StorageURL, what: str) -> None:
    """Refuse a ``redis+sentinel://`` URL without hosts or service name (or with a
    database that is not a number), and a ``redis+cluster://`` one with a path."""
    url = storage.url
    form = (
        "redis+sentinel://[:password@]host:26379[,host:26379...]/service[/db]"
        if storage.scheme == "redis+sentinel"
        else "redis+cluster://[:password@]host:port[,host:port...]"
    )
    try:
        parts = split_ha_url(url, 0)
    except ValueError:
        raise ValueError(f"{what} must be {form}; got {safe_for_message(url)}") from None
    if storage.scheme == "redis+sentinel":
        database = parts.path[1:]
        if not parts.path or len(database) > 1 or (database and not database[0].isdigit()):
            raise ValueError(f"{what} must be {form}; got {safe_for_message(url)}")
    elif parts.path:
        raise ValueError(
            f"{what} must be {form} (a cluster has one database); got {safe_for_message(url)}"
        )


#: What this package keeps under each ``rbe:{key}:`` name, as Redis's ``TYPE`` says it.
_KEY_TYPES = {
    "flight": "zset",
    "ended": "zset",
    "pause": "string",
    "rule": "hash",
    "n": "string",
    "lease": "zset",
    "who": "hash",
}


def _key_state(client: Any, name: bytes, kind: str, now: float) -> dict[str, Any]:
    """What one of a limiter key's Redis keys says, as :class:`PermitState` fields.

    :raises redis.ResponseError: a key of another type.
    :raises ValueError: a value that is not a number.
    """
    if kind == "flight":
        return _flight_state(client, name, now)
    if kind == "ended":
        return {"ended": client.zcard(name)}
    if kind == "pause":
        left = float(client.get(name) or 0) - now
        return {"paused_for": min(left, MAX_PAUSE)} if left > 0 else {}
    if kind == "rule":
        limit, period = client.hmget(name, "limit", "period")
        if limit is None:
            return {}
        return {
            "learned": (int(limit), float(period)),
            "learned_for": max(0.0, client.pttl(name) / 1000),
        }
    if kind == "lease":
        client.zcard(name)  # (read with the permits: a stray one is named)
        return {}
    if kind == "who":
        client.hlen(name)
        return {}
    int(client.get(name) or 0)  # the counter: nothing to show, but a stray one is named
    return {}


def _flight_state(client: Any, name: bytes, now: float) -> dict[str, Any]:
    """The permits not over of one key (its ``flight``, ``lease`` and ``who`` keys),
    as :class:`PermitState` fields: in flight, waiting, and their holders."""
    tag = name[: -len(b"flight")]
    pipe = client.pipeline(transaction=True)
    pipe.zrange(name, 0, -1, withscores=True)
    pipe.zrange(tag + b"lease", 0, -1, withscores=True)
    pipe.hgetall(tag + b"who")
    permits, leases, who = pipe.execute()
    waiting_until = dict(leases)
    holders = []
    for member, at in permits:
        until = waiting_until.get(member)
        if until is not None and until <= now:
            continue  # lapsed: the next permit taken gives it back
        if until is None and at + _hold(member) <= now:
            continue  # its holder never said: it counts as ended
        host, _, rest = who.get(member, b"?|0|0").decode("utf-8", "replace").partition("|")
        pid, _, since = rest.partition("|")
        holders.append(
            PermitHolder(
                "waiting" if until is not None else "sending",
                host,
                int(pid or 0),
                since=float(since or at),
                at=float(at),
            )
        )
    holders.sort(key=lambda held: held.since)
    waiting = sum(held.state == "waiting" for held in holders)
    return {
        "in_flight": len(holders) - waiting,
        "waiting": waiting,
        "holders": tuple(holders),
        "now": now,
    }


def _wrong(client: Any, name: bytes, kind: str, exc: Exception) -> str:
    """Why a key's read was refused, in words: its type, when that is what is wrong."""
    try:
        held = client.type(name).decode()
    except redis_module().RedisError:  # the first refusal says enough
        held = ""
    if held and held != _KEY_TYPES[kind]:
        return f"a {held} where this package keeps a {_KEY_TYPES[kind]}"
    return f"refused: {str(exc).splitlines()[0][:200]}" if str(exc) else "refused"


def _circuit_record(value: bytes | None) -> CircuitRecord | None:
    """A published circuit's record from its JSON, or None (gone meanwhile, or not one)."""
    if value is None:
        return None
    try:
        kept = json.loads(value)
        return CircuitRecord(
            host=str(kept["host"]),
            state=str(kept["state"]),
            since=float(kept["since"]),
            failures=int(kept["failures"]),
            holder_host=str(kept["holder_host"]),
            pid=int(kept["pid"]),
            published=float(kept["published"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def _hold(member: bytes) -> float:
    """The hold a permit's member carries (``<n>:<hold>:<random>``)."""
    try:
        return float(member.split(b":")[1])
    except (IndexError, ValueError):
        return MAX_HOLD


def _outage_errors() -> tuple[type[BaseException], ...]:
    """redis-py's exceptions that mean the server cannot be had now (those this
    version of redis-py has)."""
    exceptions = redis_module().exceptions
    names = (
        "ConnectionError",  # (AuthenticationError, BusyLoadingError, MaxConnectionsError...)
        "TimeoutError",
        "ReadOnlyError",
        "OutOfMemoryError",
        "ClusterDownError",  # (MasterDownError)
        "TryAgainError",
        "SlotNotCoveredError",  # a cluster whose slots are being moved
    )
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


def _seconds(time: tuple[int, int]) -> float:
    """A Redis ``TIME`` reply in seconds."""
    return time[0] + time[1] / 1e6


def _milliseconds(ttl: float) -> int:
    """A Redis expiry: at least 1 ms, and at most :data:`MAX_TTL`."""
    return max(1, int(min(ttl, MAX_TTL) * 1000))
