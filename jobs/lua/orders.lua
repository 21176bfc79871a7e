-- The orders sink (jobs/orders_sink.py): one micro-batch's per-minute totals, all or nothing.
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

if touched or snapshot_date(today_keys[1]) ~= today then
  local day = prefix .. ':orders:day:' .. today
  local data = '{"date":' .. cjson.encode(today)
    .. ',"count":' .. (redis.call('HGET', day, 'count') or '0')
    .. ',"amount_cents":' .. (redis.call('HGET', day, 'amount_cents') or '0')
  if touched and (ARGV[12] or '') ~= '' then data = data .. ',"last_recorded_at":' .. cjson.encode(ARGV[12]) end
  data = data .. '}'
  publish_envelope(today_keys, today_channel, data, nil, bound)
  published = true
end

local new_day = snapshot_date(minute_keys[1]) ~= today
if touched or new_day then
  local all = minutes_data(redis.call('HKEYS', prefix .. ':orders:minute:' .. today .. ':count'))
  local live = nil
  if not new_day then live = minutes_data(changed) end
  publish_envelope(minute_keys, minute_channel, all, live, bound)
  published = true
end

-- 3. remember the batch
if ARGV[2] ~= '' then
  remember_batch()
  return 1
end
if published then return 1 end
return 0
