"""The session directory in Redis: which instance owns which session, and who is alive.

Keys (all under ``nimbus:``; the Redis URL's database number separates clusters):

* ``nimbus:i:<instance>`` -- the instance's advertise URL and drain state (JSON),
  ``EX instance_ttl`` (5 s), rewritten every ``heartbeat`` (1 s).  Its absence
  means the instance is dead: its sessions answer a resume with 4011 at once.
* ``nimbus:s:<sid>`` -- the owning instance, ``EX session_ttl`` (the retention
  window plus 10 s), rewritten every heartbeat for every session the instance
  holds (attached or retained), deleted when the session ends.
* ``nimbus:c:<instance>`` -- a hash of the instance's session counts per
  principal (``p:<hash>``) and per client prefix (``a:<prefix>``), ``EX
  instance_ttl``: what makes the per-client session limits cluster-wide.
* ``nimbus:instances`` -- the set of instance ids (pruned of dead ones).

Every heartbeat rewrites everything the instance owns, so a Redis that
restarts empty is whole again one heartbeat after it is back (no live
session is lost); a new session is written at once (:meth:`Directory.register`).
Redis is reached with bounded timeouts (``socket_timeout``, one retry), so a
Redis outage never stalls the server: lookups report ``down`` and the
heartbeat keeps trying.

Memory: the directory holds the ids of the sessions it owns (bounded by
``max_sessions``) and the other instances' count hashes (bounded by their
``max_sessions`` each).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Directory", "Lookup", "Owner"]

log = logging.getLogger("nimbus_websocket.cluster")

PREFIX = "nimbus:"


class Owner(enum.StrEnum):
    """What the directory says about a session id."""

    FOUND = "found"  #: owned by a live instance (``Lookup.url``)
    MISSING = "missing"  #: no such session in the directory
    DEAD = "dead"  #: its owner's heartbeat expired
    DOWN = "down"  #: Redis did not answer


@dataclass(frozen=True, slots=True)
class Lookup:
    """A directory answer: the state, the owner and its advertise URL when found."""

    state: Owner
    instance: str = ""
    url: str = ""


class Directory:
    """One instance's view of the Redis directory (``redis.asyncio``).

    ``owned()`` returns ``(sids, counts)`` of this instance at the time of the
    call: the heartbeat publishes both.
    """

    def __init__(
        self,
        url: str,
        instance: str,
        advertise: str,
        *,
        owned: Callable[[], tuple[Iterable[str], dict[str, int]]],
        session_ttl: float,
        heartbeat: float = 1.0,
        instance_ttl: float = 5.0,
        timeout: float = 1.0,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.instance = instance
        self.advertise = advertise
        self.heartbeat = heartbeat
        self.instance_ttl = instance_ttl
        self.session_ttl = max(1, int(session_ttl + 0.999))
        self._owned = owned
        self._redis: Any = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self.draining = False
        self._stopping = False
        self._timeout = timeout
        #: True while the last Redis operation succeeded.
        self.up = False
        self._task: asyncio.Task[None] | None = None
        self._last: set[str] = set()
        self._remote: dict[str, int] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Write this instance once (a warning when Redis is not there yet), then heartbeat."""
        await self._beat()
        if not self.up:
            log.warning("redis not reachable: sessions stay local until it is", extra={"event": "redis_down"})
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the heartbeat and remove this instance and its sessions from the directory."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:  # ends at its next wake-up (now); a Redis call in flight is bounded
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, self.heartbeat + 3 * self._timeout)
        for t in list(self._pending):
            t.cancel()
        with contextlib.suppress(Exception):
            keys = [self._key("i", self.instance), self._key("c", self.instance)]
            keys += [self._key("s", sid) for sid in self._last]
            await self._redis.delete(*keys)
            await self._redis.srem(PREFIX + "instances", self.instance)
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    def set_draining(self, on: bool) -> None:
        """Publish the drain state with the next heartbeat (now)."""
        self.draining = on
        self._wake.set()

    # ---------------------------------------------------------- registrations
    def register(self, sid: str) -> None:
        """Write ``sid`` -> this instance now (in the background)."""
        self._last.add(sid)
        self._spawn(self._redis.set(self._key("s", sid), self.instance, ex=self.session_ttl))

    def unregister(self, sid: str) -> None:
        """Remove ``sid`` now (in the background)."""
        self._last.discard(sid)
        self._spawn(self._redis.delete(self._key("s", sid)))

    def remote_count(self, key: str) -> int:
        """Sessions the *other* live instances hold for a count key (``p:...``/``a:...``), as of the last heartbeat."""
        return self._remote.get(key, 0)

    async def lookup(self, sid: str) -> Lookup:
        """Who owns ``sid``: found (with the URL), missing, dead owner, or Redis down."""
        try:
            owner = await self._redis.get(self._key("s", sid))
            if owner is None:
                self.up = True
                return Lookup(Owner.MISSING)
            raw = await self._redis.get(self._key("i", owner))
            self.up = True
        except Exception:  # redis errors, timeouts, a closed pool: the directory is down
            log.debug("directory lookup failed", exc_info=True)
            self.up = False
            return Lookup(Owner.DOWN)
        if raw is None:
            return Lookup(Owner.DEAD, str(owner))
        try:
            url = str(json.loads(raw)["url"])
        except (ValueError, KeyError, TypeError):
            return Lookup(Owner.DEAD, str(owner))
        return Lookup(Owner.FOUND, str(owner), url)

    # ----------------------------------------------------------------- inside
    def _key(self, kind: str, name: str) -> str:
        return f"{PREFIX}{kind}:{name}"

    def _spawn(self, aw: Any) -> None:
        async def run() -> None:
            try:
                await aw
                self.up = True
            except Exception:  # the next heartbeat writes it again
                self.up = False
                log.debug("directory write failed", exc_info=True)

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _loop(self) -> None:
        # No cancellation (3.11's asyncio.timeout can swallow a cancel that races its expiry):
        # stop() sets the flag and wakes the loop.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat)
            self._wake.clear()
            if not self._stopping:
                await self._beat()

    async def _beat(self) -> None:
        """Rewrite this instance, its sessions and counts; read the others' counts."""
        was_up = self.up
        sids, counts = self._owned()
        now_owned = set(sids)
        gone = self._last - now_owned
        me = json.dumps({"url": self.advertise, "draining": self.draining, "ts": round(time.time(), 3)})
        try:
            pipe = self._redis.pipeline(transaction=False)
            ttl = max(1, int(self.instance_ttl))
            pipe.set(self._key("i", self.instance), me, ex=ttl)
            pipe.sadd(PREFIX + "instances", self.instance)
            for sid in now_owned:
                pipe.set(self._key("s", sid), self.instance, ex=self.session_ttl)
            if gone:
                pipe.delete(*(self._key("s", sid) for sid in gone))
            ckey = self._key("c", self.instance)
            pipe.delete(ckey)
            if counts:
                pipe.hset(ckey, mapping={k: str(v) for k, v in counts.items()})
                pipe.expire(ckey, ttl)
            pipe.smembers(PREFIX + "instances")
            results = await pipe.execute()
            others = sorted(str(x) for x in results[-1] if str(x) != self.instance)
            remote: dict[str, int] = {}
            if others:
                alive = await self._redis.mget([self._key("i", o) for o in others])
                dead = [o for o, v in zip(others, alive, strict=True) if v is None]
                live = [o for o, v in zip(others, alive, strict=True) if v is not None]
                pipe = self._redis.pipeline(transaction=False)
                for o in live:
                    pipe.hgetall(self._key("c", o))
                if dead:
                    pipe.srem(PREFIX + "instances", *dead)
                for h in (await pipe.execute())[: len(live)]:
                    for k, v in dict(h).items():
                        remote[str(k)] = remote.get(str(k), 0) + int(v)
            self._remote = remote
            self._last = now_owned
            self.up = True
            if not was_up:
                log.info(
                    "directory written",
                    extra={"event": "redis_up", "sessions": len(now_owned)},
                )
        except Exception:  # Redis down or restarting: try again next beat
            if was_up:
                log.warning("redis unreachable", extra={"event": "redis_down"})
            log.debug("heartbeat failed", exc_info=True)
            self.up = False
