-- The orders applier (jobs/orders_applier.py): paid orders of the real-time path, each counted once
-- by its order id, all or nothing. Prepended with jobs/lua/envelope.lua and jobs/lua/orders_channels.lua
-- (no batch guard: the rows themselves say whether they were applied).
-- KEYS[1..5]  the stream keys of orders.today (jobs/lua/envelope.lua)
-- KEYS[6..10]  the same of orders.per_minute
-- ARGV[1] prefix  ARGV[2] today (YYYY-MM-DD)  ARGV[3] ttl seconds of the day and minute hashes
-- ARGV[4] ttl seconds of a day's set of applied order ids (not above ARGV[3])
-- ARGV[5] JSON [[order_id, date, "HH:MM", "amount_cents", recorded_at], ...], amounts as strings,
--         recorded_at ISO 8601 (UTC) or ''
-- ARGV[6], ARGV[7] the channel names orders.today and orders.per_minute
-- ARGV[8], ARGV[9] each channel history's size and age in seconds
-- Returns {applied, repeated, refused}: orders counted now, orders counted before (no-ops), and
-- orders of a day whose set of applied ids has expired while its totals remain (never counted twice).
local prefix, today, ttl, ids_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local today_keys, minute_keys = stream_keys(1), stream_keys(6)
local today_channel, minute_channel = ARGV[6], ARGV[7]
local bound = history_bound(ARGV[8], ARGV[9])

-- 1. count each order not counted before: its id joins its day's set in the same step
local applied, repeated, refused = 0, 0, 0
local changed, seen_minute, touched, newest = {}, {}, false, ''
for _, row in ipairs(cjson.decode(ARGV[5])) do
  local order_id, date, minute, amount, recorded = row[1], row[2], row[3], row[4], row[5]
  local ids = prefix .. ':orders:applied:' .. date
  local day = prefix .. ':orders:day:' .. date
  if redis.call('EXISTS', ids) == 0 and redis.call('EXISTS', day) == 1 then
    refused = refused + 1           -- the day's set expired: whether this order counted is unknown
  elseif redis.call('SADD', ids, order_id) == 0 then
    repeated = repeated + 1
  else
    applied = applied + 1
    redis.call('EXPIRE', ids, ids_ttl)
    local mc = prefix .. ':orders:minute:' .. date .. ':count'
    local ma = prefix .. ':orders:minute:' .. date .. ':amount'
    redis.call('HINCRBY', day, 'count', 1)
    redis.call('HINCRBY', day, 'amount_cents', amount)
    redis.call('HINCRBY', mc, minute, 1)
    redis.call('HINCRBY', ma, minute, amount)
    for _, key in ipairs({day, mc, ma}) do redis.call('EXPIRE', key, ttl) end
    if date == today then
      touched = true
      if not seen_minute[minute] then
        seen_minute[minute] = true
        changed[#changed + 1] = minute
      end
      if recorded > newest then newest = recorded end  -- same ISO 8601 form: text order is time order
    end
  end
end

-- 2. publish today's channels when they changed or still show an earlier day (orders_channels.lua)
publish_orders({prefix = prefix, today = today, today_keys = today_keys, minute_keys = minute_keys,
                today_channel = today_channel, minute_channel = minute_channel, bound = bound},
               touched, changed, newest)
return {applied, repeated, refused}
