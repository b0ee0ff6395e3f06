"""The ids of the API keys, held by each replica so that a well-formed key whose id no key has is refused without a
database lookup (a flood of random `isk_` keys cost one SELECT each: a cache of refusals only helps a repeated key).

The list is read again when a key names an id not in it: at once when this process made a key since the last
read, else at most `RELOAD_BURST` times in a row and then once per `RELOAD_EVERY_S`. So a key made with
`imgserve keys create` works at its first request on every replica, except while unknown ids are arriving faster
than that (a flood, or a client with a mistyped key): then within `RELOAD_EVERY_S`. Past `MAX_IDS` keys the list is
not kept and every well-formed key is looked up, as before; every id is read again each `FULL_READ_EVERY_S`, so the
list is kept again once keys are deleted below `MAX_IDS`.

A read after the first asks only for keys made since the last read (less `CLOCK_MARGIN_S`, for hosts whose clocks
differ): a flood made each replica read every id 4 times a second (200,000 ids on SQLite: 120-160 ms each, about half
a core; reading the recent ones scans the table in about 20 ms). All ids are read again every `FULL_READ_EVERY_S`,
which also catches a key made on a host whose clock is further behind, and forgets deleted keys (an id of a deleted
key in the list only costs its lookup).
"""

import asyncio
import logging
import time
from collections.abc import Callable

from serving.security.keys import keys_made_here

logger = logging.getLogger("imgserve.security")
RELOAD_EVERY_S = 0.25
RELOAD_BURST = 3
MAX_IDS = 200_000
FULL_READ_EVERY_S = 60.0
CLOCK_MARGIN_S = 300.0


class KnownKeyIds:
    def __init__(
        self,
        load: Callable[[int, float | None], list[str]],
        reload_every_s: float = RELOAD_EVERY_S,
        burst: int = RELOAD_BURST,
        max_ids: int = MAX_IDS,
        full_read_every_s: float = FULL_READ_EVERY_S,
    ):
        """`load(limit, since)`: the ids of the keys in the database made at or after `since` (UNIX seconds; None:
        all), at most `limit` of them."""
        self._load, self.reload_every_s, self.burst, self.max_ids = load, reload_every_s, burst, max_ids
        self.full_read_every_s = full_read_every_s
        self._ids: set[str] = set()
        self._unbounded = False  # more than `max_ids` keys: every id may exist
        self._made_here = -1  # keys_made_here() at the last read (-1: never read)
        self._reloads = 0  # reads started
        self._full_read_at = -float("inf")  # time.monotonic() of the last read of every id
        self._read_since = 0.0  # time.time() when the last read started
        self._tokens, self._refilled = float(burst), time.monotonic()
        self._lock = asyncio.Lock()

    def _may_reload(self) -> bool:
        if self._made_here != keys_made_here():
            return True  # never read, or this process made a key since
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) / self.reload_every_s)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _full_read_due(self) -> bool:
        return time.monotonic() - self._full_read_at >= self.full_read_every_s

    async def may_exist(self, key_id: str) -> bool:
        """False when no key has `key_id` (read again first when allowed); True when one may."""
        if key_id in self._ids or (self._unbounded and not self._full_read_due()):
            return True
        reloads = self._reloads
        async with self._lock:
            # Past `max_ids`, every id is read again once per `full_read_every_s`: once keys were deleted below it,
            # the list is kept again (it was never read again, and every unknown id cost a lookup until a restart).
            if self._unbounded:
                if self._full_read_due():
                    self._reloads += 1
                    await self._read()
            # A read that started after this id arrived has finished meanwhile: it answers for this id too.
            elif self._reloads == reloads and self._may_reload():
                self._reloads += 1
                await self._read()
        return self._unbounded or key_id in self._ids

    async def _read(self) -> None:
        made_here, started, now = keys_made_here(), time.time(), time.monotonic()
        full = now - self._full_read_at >= self.full_read_every_s
        since = None if full else self._read_since - CLOCK_MARGIN_S
        ids = await asyncio.to_thread(self._load, self.max_ids + 1, since)
        self._made_here, self._read_since = made_here, started
        if full:
            self._ids, self._full_read_at = set(ids), now
        else:
            self._ids.update(ids)
        was_unbounded, self._unbounded = self._unbounded, len(self._ids) > self.max_ids
        if self._unbounded:
            self._ids = set()
            if not was_unbounded:  # not again at each full read
                logger.warning("more than %d API keys: unknown key ids are looked up one by one", self.max_ids)
