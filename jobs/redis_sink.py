"""The orders job's Redis sink: one atomic Lua script per micro-batch.

The script applies a batch's per-minute aggregates to today's running totals
and publishes the dashboard channels, all or nothing, and only once per batch
id: Spark replays a batch after a failure with the same id and the same data,
and the script then changes nothing. Together with the checkpoint this makes
the totals exact across restarts.

Keys (prefix from RTDASH_REDIS_PREFIX):
    <p>:job:orders:batch                      last applied batch id
    <p>:orders:day:<date>                     hash count, amount_cents
    <p>:orders:minute:<date>:count|:amount    hash "HH:MM" -> value
and the snapshot / live / seq keys of rtdash.channels for `orders.today` and
`orders.per_minute`. Day and minute hashes expire after eight days.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY

TTL_SECONDS = 8 * 24 * 3600

# ARGV: prefix, batch_id, today, payload JSON {"minutes": [[date, "HH:MM", count, amount], ...]}
_APPLY_BATCH = """
local prefix, batch_id, today = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local batch_key = prefix .. ':job:orders:batch'
local last = tonumber(redis.call('GET', batch_key) or '-1')
if batch_id <= last then return 0 end
local rows = cjson.decode(ARGV[4])['minutes']
local ttl = tonumber(ARGV[5])
local changed = {}
local touched_today = false
for _, row in ipairs(rows) do
  local date, minute, count, amount = row[1], row[2], row[3], row[4]
  local day = prefix .. ':orders:day:' .. date
  redis.call('HINCRBY', day, 'count', count)
  redis.call('HINCRBY', day, 'amount_cents', amount)
  redis.call('EXPIRE', day, ttl)
  local mc, ma = prefix .. ':orders:minute:' .. date .. ':count', prefix .. ':orders:minute:' .. date .. ':amount'
  redis.call('HINCRBY', mc, minute, count)
  redis.call('HINCRBY', ma, minute, amount)
  redis.call('EXPIRE', mc, ttl)
  redis.call('EXPIRE', ma, ttl)
  if date == today then
    touched_today = true
    changed[#changed + 1] = minute
  end
end
local function publish(channel, data_json)
  local seq = redis.call('INCR', prefix .. ':seq:' .. channel)
  local envelope = '{"channel":' .. cjson.encode(channel) .. ',"seq":' .. seq .. ',"data":' .. data_json .. '}'
  redis.call('SET', prefix .. ':snapshot:' .. channel, envelope)
  redis.call('PUBLISH', prefix .. ':live:' .. channel, envelope)
end
local function minutes_json(names)
  local mc, ma = prefix .. ':orders:minute:' .. today .. ':count', prefix .. ':orders:minute:' .. today .. ':amount'
  local parts = {}
  for _, m in ipairs(names) do
    parts[#parts + 1] = cjson.encode(m) .. ':{"count":' .. (redis.call('HGET', mc, m) or '0')
      .. ',"amount_cents":' .. (redis.call('HGET', ma, m) or '0') .. '}'
  end
  return '{"date":' .. cjson.encode(today) .. ',"minutes":{' .. table.concat(parts, ',') .. '}}'
end
if touched_today then
  local day = prefix .. ':orders:day:' .. today
  publish('%(today)s', '{"date":' .. cjson.encode(today) .. ',"count":' .. (redis.call('HGET', day, 'count') or '0')
    .. ',"amount_cents":' .. (redis.call('HGET', day, 'amount_cents') or '0') .. '}')
  -- the live message carries the changed minutes; the snapshot all minutes of the day
  local seq = redis.call('INCR', prefix .. ':seq:%(per_minute)s')
  local head = '{"channel":"%(per_minute)s","seq":' .. seq .. ',"data":'
  redis.call('PUBLISH', prefix .. ':live:%(per_minute)s', head .. minutes_json(changed) .. '}')
  redis.call('SET', prefix .. ':snapshot:%(per_minute)s',
    head .. minutes_json(redis.call('HKEYS', prefix .. ':orders:minute:' .. today .. ':count')) .. '}')
end
redis.call('SET', batch_key, batch_id)
return 1
""" % {"today": ORDERS_TODAY, "per_minute": ORDERS_PER_MINUTE}

# ARGV: prefix, today. Gives dashboards today's zero before the first order of the day.
_ENSURE_TODAY = """
local prefix, today = ARGV[1], ARGV[2]
local snap = redis.call('GET', prefix .. ':snapshot:%(today)s')
if snap and cjson.decode(snap)['data']['date'] == today then return 0 end
local day = prefix .. ':orders:day:' .. today
local seq = redis.call('INCR', prefix .. ':seq:%(today)s')
local envelope = '{"channel":"%(today)s","seq":' .. seq .. ',"data":{"date":' .. cjson.encode(today)
  .. ',"count":' .. (redis.call('HGET', day, 'count') or '0')
  .. ',"amount_cents":' .. (redis.call('HGET', day, 'amount_cents') or '0') .. '}}'
redis.call('SET', prefix .. ':snapshot:%(today)s', envelope)
redis.call('PUBLISH', prefix .. ':live:%(today)s', envelope)
return 1
""" % {"today": ORDERS_TODAY}


@dataclass(frozen=True)
class MinuteTotal:
    """Paid orders of one minute of one day (in RTDASH_TIMEZONE) within one batch."""

    date: str
    minute: str
    count: int
    amount_cents: int


class OrdersSink:
    """Applies batches to Redis; safe to call again with a batch it has seen."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix
        self._apply = client.register_script(_APPLY_BATCH)
        self._ensure = client.register_script(_ENSURE_TODAY)

    def apply(self, batch_id: int, today: str, minutes: list[MinuteTotal]) -> bool:
        """True if the batch was applied, False if it had been applied before."""
        payload = json.dumps({"minutes": [[m.date, m.minute, m.count, m.amount_cents] for m in minutes]})
        return bool(self._apply(args=[self.prefix, batch_id, today, payload, TTL_SECONDS]))

    def ensure_today(self, today: str) -> bool:
        return bool(self._ensure(args=[self.prefix, today]))

    def last_batch(self) -> int:
        value = self.client.get(f"{self.prefix}:job:orders:batch")
        return int(value) if value is not None else -1
