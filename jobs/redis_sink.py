"""The orders job's Redis sink: one atomic Lua script per micro-batch.

The script adds a batch's per-minute totals to the running totals and
publishes the dashboard channels, all or nothing, and only once per batch id:
Spark replays a batch after a failure with the same id and the same data, and
the script then changes nothing. With the checkpoint this keeps the totals
exact across restarts.

Keys (prefix from RTDASH_REDIS_PREFIX; one Redis instance, not a cluster: the
day keys are derived inside the script):

    <p>:job:orders:batch                    last applied batch id
    <p>:orders:day:<date>                   hash: count, amount_cents
    <p>:orders:minute:<date>:count          hash: "HH:MM" -> orders
    <p>:orders:minute:<date>:amount         hash: "HH:MM" -> cents

plus the snapshot, live and seq keys of `rtdash.channels` for `orders.today`
and `orders.per_minute`. Day and minute hashes expire eight days after their
last change.

Channels, for the configured "today" only (earlier days are stored, never
published):

* ``orders.today``: ``{"date", "count", "amount_cents"}``, snapshot and live
  message alike;
* ``orders.per_minute``: ``{"date", "minutes": {"HH:MM": {"count",
  "amount_cents"}}}``; the snapshot holds every minute of the day, the live
  message only the minutes this batch changed, except on the first message of
  a new day, which carries the whole (usually empty) day so clients replace
  yesterday's chart.

When the stored snapshots are of an earlier day, any call (a batch, or
`ensure_today` at job start) first replaces them with today's totals, so a
dashboard shows today's zero before the day's first order.

JSON is assembled from the integer strings Redis returns, never through
cjson, whose number encoding turns large integers into ``1e+14`` and whose
empty table is ambiguous; batch counts travel to the script as strings too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, live_channel, seq_key, snapshot_key

TTL_SECONDS = 8 * 24 * 3600

# KEYS: the batch key, then snapshot, live channel and seq key of orders.today, then of
#       orders.per_minute (named by rtdash.channels, the push server's side of the contract).
# ARGV: prefix, batch id ("" = no batch, only bring the snapshots to today), today (YYYY-MM-DD),
#       ttl seconds, JSON [[date, "HH:MM", "count", "amount_cents"], ...] with numbers as strings.
# Returns 1 when the batch was applied (or, without a batch, when a snapshot was replaced), else 0.
_SCRIPT = """
local prefix, batch, today, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local batch_key = KEYS[1]
local today_snapshot, today_live, today_seq = KEYS[2], KEYS[3], KEYS[4]
local minute_snapshot, minute_live, minute_seq = KEYS[5], KEYS[6], KEYS[7]
if batch ~= '' then
  local last = redis.call('GET', batch_key)
  if last and tonumber(batch) <= tonumber(last) then return 0 end
end

-- 1. add the batch to the day and minute hashes
local changed, touched = {}, false
for _, row in ipairs(cjson.decode(ARGV[5])) do
  local date, minute, count, amount = row[1], row[2], row[3], row[4]
  local day = prefix .. ':orders:day:' .. date
  local mc = prefix .. ':orders:minute:' .. date .. ':count'
  local ma = prefix .. ':orders:minute:' .. date .. ':amount'
  redis.call('HINCRBY', day, 'count', count)
  redis.call('HINCRBY', day, 'amount_cents', amount)
  redis.call('HINCRBY', mc, minute, count)
  redis.call('HINCRBY', ma, minute, amount)
  for _, key in ipairs({day, mc, ma}) do redis.call('EXPIRE', key, ttl) end
  if date == today then
    touched = true
    changed[#changed + 1] = minute
  end
end

-- 2. publish today's channels when they changed or still show an earlier day
local function snapshot_date(snapshot_key)
  local snap = redis.call('GET', snapshot_key)
  if not snap then return nil end
  local ok, envelope = pcall(cjson.decode, snap)
  if ok and type(envelope) == 'table' and type(envelope['data']) == 'table' then
    return envelope['data']['date']
  end
  return nil
end
local function envelope(channel, seq, data)
  return '{"channel":' .. cjson.encode(channel) .. ',"seq":' .. string.format('%%d', seq)
    .. ',"data":' .. data .. '}'
end
local function minutes_data(names)
  local mc = prefix .. ':orders:minute:' .. today .. ':count'
  local ma = prefix .. ':orders:minute:' .. today .. ':amount'
  table.sort(names)
  local parts = {}
  for _, m in ipairs(names) do
    parts[#parts + 1] = cjson.encode(m) .. ':{"count":' .. (redis.call('HGET', mc, m) or '0')
      .. ',"amount_cents":' .. (redis.call('HGET', ma, m) or '0') .. '}'
  end
  return '{"date":' .. cjson.encode(today) .. ',"minutes":{' .. table.concat(parts, ',') .. '}}'
end
local published = false

if touched or snapshot_date(today_snapshot) ~= today then
  local day = prefix .. ':orders:day:' .. today
  local data = '{"date":' .. cjson.encode(today)
    .. ',"count":' .. (redis.call('HGET', day, 'count') or '0')
    .. ',"amount_cents":' .. (redis.call('HGET', day, 'amount_cents') or '0') .. '}'
  local text = envelope('%(today)s', redis.call('INCR', today_seq), data)
  redis.call('SET', today_snapshot, text)
  redis.call('PUBLISH', today_live, text)
  published = true
end

local new_day = snapshot_date(minute_snapshot) ~= today
if touched or new_day then
  local seq = redis.call('INCR', minute_seq)
  local all = minutes_data(redis.call('HKEYS', prefix .. ':orders:minute:' .. today .. ':count'))
  redis.call('SET', minute_snapshot, envelope('%(per_minute)s', seq, all))
  local live = all
  if not new_day then live = minutes_data(changed) end
  redis.call('PUBLISH', minute_live, envelope('%(per_minute)s', seq, live))
  published = true
end

-- 3. remember the batch
if batch ~= '' then
  redis.call('SET', batch_key, batch)
  return 1
end
if published then return 1 end
return 0
""" % {"today": ORDERS_TODAY, "per_minute": ORDERS_PER_MINUTE}


@dataclass(frozen=True)
class MinuteTotal:
    """Paid orders of one minute of one day (in RTDASH_TIMEZONE) within one batch."""

    date: str       # YYYY-MM-DD
    minute: str     # HH:MM
    count: int
    amount_cents: int


class OrdersSink:
    """Applies batches to Redis; safe to call again with a batch it has seen."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int = TTL_SECONDS):
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._script = client.register_script(_SCRIPT)
        self._batch_key = f"{prefix}:job:orders:batch"
        self._keys = [self._batch_key] + [key(prefix, channel) for channel in (ORDERS_TODAY, ORDERS_PER_MINUTE)
                                          for key in (snapshot_key, live_channel, seq_key)]

    def apply(self, batch_id: int, today: str, minutes: list[MinuteTotal]) -> bool:
        """Add one batch; True if applied, False if this or a later batch id was applied before."""
        if batch_id < 0:
            raise ValueError(f"batch ids start at 0, got {batch_id}")
        rows = [[m.date, m.minute, str(m.count), str(m.amount_cents)] for m in minutes]
        return self._run(str(batch_id), today, rows)

    def ensure_today(self, today: str) -> bool:
        """Give `today` its snapshots (zero before its first order); True if they were replaced."""
        return self._run("", today, [])

    def last_batch(self) -> int:
        """The last applied batch id, -1 before the first."""
        value = self.client.get(self._batch_key)
        return int(value) if value is not None else -1

    def _run(self, batch: str, today: str, rows: list[list[str]]) -> bool:
        payload = json.dumps(rows, separators=(",", ":"))
        return bool(self._script(keys=self._keys, args=[self.prefix, batch, today, self.ttl_seconds, payload]))
