-- The orders sink (jobs/orders_sink.py): one micro-batch's per-minute totals, all or nothing.
-- Prepended with jobs/lua/guard.lua, jobs/lua/envelope.lua and jobs/lua/orders_channels.lua.
-- KEYS[2..6]  the stream keys of orders.today (jobs/lua/envelope.lua)
-- KEYS[7..11]  the same of orders.per_minute
-- ARGV[4] prefix  ARGV[5] today (YYYY-MM-DD)  ARGV[6] ttl seconds
-- ARGV[7] JSON [[date, "HH:MM", "count", "amount_cents"], ...], numbers as strings
-- ARGV[8], ARGV[9] the channel names orders.today and orders.per_minute
-- ARGV[10], ARGV[11] each channel history's size and age in seconds
-- ARGV[12] when the newest payment of the batch's orders of today was recorded (ISO 8601), '' when unknown
-- Returns 1 when the batch was applied (or, outside a batch, when a snapshot was replaced), else 0.
local prefix, today, ttl = ARGV[4], ARGV[5], ARGV[6]
local today_keys, minute_keys = stream_keys(2), stream_keys(7)
local today_channel, minute_channel = ARGV[8], ARGV[9]
local bound = history_bound(ARGV[10], ARGV[11])
if already_applied() then return 0 end

-- 1. add the batch to the day and minute hashes
local changed, touched = {}, false
for _, row in ipairs(cjson.decode(ARGV[7])) do
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

-- 2. publish today's channels when they changed or still show an earlier day (orders_channels.lua)
local published = publish_orders({prefix = prefix, today = today, today_keys = today_keys, minute_keys = minute_keys,
                                  today_channel = today_channel, minute_channel = minute_channel, bound = bound},
                                 touched, changed, ARGV[12])

-- 3. remember the batch
if ARGV[2] ~= '' then
  remember_batch()
  return 1
end
if published then return 1 end
return 0
