-- orders.today and orders.per_minute from the day and minute hashes both orders writers keep
-- (<p>:orders:day:D, <p>:orders:minute:D:count|amount): the micro-batch sink (orders.lua) and the
-- orders applier (orders_applier.lua) publish them through this one definition, so the channels
-- have one shape whichever writer the orders mode runs. Needs jobs/lua/envelope.lua before it.

-- The date of the envelope in `snapshot_key`, nil when there is none (or it cannot be read).
local function orders_snapshot_date(snapshot_key)
  local snap = redis.call('GET', snapshot_key)
  if not snap then return nil end
  local ok, envelope = pcall(cjson.decode, snap)
  if ok and type(envelope) == 'table' and type(envelope['data']) == 'table' then
    return envelope['data']['date']
  end
  return nil
end

-- orders.per_minute's data for the minutes `names` of `today` (sorted, each once).
local function orders_minutes_data(prefix, today, names)
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

-- Publish today's channels when the write `touched` today or a snapshot still shows an earlier day:
-- orders.today whole (with `recorded`, the newest payment's ISO 8601 time, when today was touched and
-- it is known), orders.per_minute whole as the snapshot and only the `changed` minutes live (whole on
-- a new day). `o` holds prefix, today, today_keys, minute_keys, today_channel, minute_channel and
-- bound. Returns true when something was published.
local function publish_orders(o, touched, changed, recorded)
  local published = false
  if touched or orders_snapshot_date(o.today_keys[1]) ~= o.today then
    local day = o.prefix .. ':orders:day:' .. o.today
    local data = '{"date":' .. cjson.encode(o.today)
      .. ',"count":' .. (redis.call('HGET', day, 'count') or '0')
      .. ',"amount_cents":' .. (redis.call('HGET', day, 'amount_cents') or '0')
    if touched and (recorded or '') ~= '' then data = data .. ',"last_recorded_at":' .. cjson.encode(recorded) end
    publish_envelope(o.today_keys, o.today_channel, data .. '}', nil, o.bound)
    published = true
  end
  local new_day = orders_snapshot_date(o.minute_keys[1]) ~= o.today
  if touched or new_day then
    local all = orders_minutes_data(o.prefix, o.today,
                                    redis.call('HKEYS', o.prefix .. ':orders:minute:' .. o.today .. ':count'))
    local live = nil
    if not new_day then live = orders_minutes_data(o.prefix, o.today, changed) end
    publish_envelope(o.minute_keys, o.minute_channel, all, live, o.bound)
    published = true
  end
  return published
end
