-- The traffic sink (jobs/traffic_sink.py): one batch's figures merged into the day's, all or nothing.
-- KEYS[2..31]  the five stream keys (jobs/lua/envelope.lua) of each channel of ARGV[8..13], in that order
-- ARGV[4] prefix  ARGV[5] wall-clock ttl (s)  ARGV[6] the batch's figures (JSON, jobs/traffic_sink.py)
-- ARGV[7] DDSketch gamma  ARGV[8..13] channel names: traffic.today, traffic.per_minute,
--   search.terms.today, search.terms.recent, search.products.today, routes.per_minute
-- ARGV[14], ARGV[15] each channel history's size and age in seconds
-- Counts travel as small JSON numbers; Redis returns integers as strings, and JSON is assembled from
-- those strings (cjson would print large numbers as 1e+14). Returns 1 when applied, 0 for a replay.
if already_applied() then return 0 end
local p, ttl, gamma = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7])
local b = cjson.decode(ARGV[6])
local today = b['today']
local evict = p .. ':traffic:evict'

local function k(...) return p .. ':' .. table.concat({...}, ':') end
local kept = {}  -- key -> event time (ms) after which it goes
local function keep(key, until_ms) kept[key] = until_ms end
local function detail_until(date) return b['days'][date][1] end
local function day_until(date) return b['days'][date][2] end
local function int(v) return string.format('%d', v) end
local function str(v) return cjson.encode(v) end

-- 1. the clock and late events
redis.call('SET', k('traffic', 'clock'), b['clock'])
for partition, ms in pairs(b['partition_clocks']) do redis.call('HSET', k('traffic', 'clocks'), partition, ms) end
if b['late'] > 0 then redis.call('INCRBY', k('traffic', 'late'), b['late']) end

-- 2. per minute: requests, errors, page views, searches, bots
local changed_minutes = {}  -- today's minutes this batch changed
local today_changed = false
for _, r in ipairs(b['minutes']) do
  local date, minute, requests, errors, page_views, searches, bots = unpack(r)
  local day = k('traffic', 'day', date)
  redis.call('HINCRBY', day, 'page_views', page_views)
  redis.call('HINCRBY', day, 'searches', searches)
  redis.call('HINCRBY', day, 'bot_requests', bots)
  keep(day, day_until(date))
  for figure, n in pairs({requests = requests, errors = errors, page_views = page_views}) do
    local hash = k('traffic', 'minute', date, figure)
    redis.call('HINCRBY', hash, minute, n)
    keep(hash, day_until(date))
  end
  if date == today then
    today_changed = true
    changed_minutes[minute] = true
  end
end

-- 3. visitors: the HLLs were filled before this script (PFADD is idempotent); keep their counts
for _, r in ipairs(b['visitor_minutes']) do
  local date, minute = r[1], r[2]
  local hll = k('traffic', 'visitors', date, minute)
  local hash = k('traffic', 'minute', date, 'visitors')
  redis.call('HSET', hash, minute, redis.call('PFCOUNT', hll))
  keep(hll, detail_until(date))
  keep(hash, day_until(date))
end
for date, _ in pairs(b['days']) do
  for _, name in ipairs({'visitors', 'users'}) do
    local hll = k('traffic', name, date)
    if redis.call('EXISTS', hll) == 1 then keep(hll, day_until(date)) end
  end
end

-- 4. search terms (per day and per minute) and the products their results held
local terms_changed, in_window = false, {}
for _, m in ipairs(b['window'] or {}) do in_window[m[1] .. ' ' .. m[2]] = true end
local recent_changed = false
for _, r in ipairs(b['terms']) do
  local date, minute, term, n = unpack(r)
  local day, per_minute = k('search', 'terms', date), k('search', 'terms', date, minute)
  redis.call('ZINCRBY', day, -n, term)
  redis.call('ZINCRBY', per_minute, -n, term)
  keep(day, day_until(date))
  keep(per_minute, detail_until(date))
  if date == today then terms_changed = true end
  if in_window[date .. ' ' .. minute] then recent_changed = true end
end
local products_changed = false
for _, r in ipairs(b['products']) do
  local date, product, n = unpack(r)
  local day = k('search', 'products', date)
  redis.call('ZINCRBY', day, -n, product)
  keep(day, day_until(date))
  if date == today then products_changed = true end
end

-- 5. routes: requests, errors and the latency histogram of each route and minute
local changed_routes = {}  -- date -> list of {minute, route}
local seen_route = {}
for _, r in ipairs(b['routes']) do
  local date, minute, route, bucket, n, errors = unpack(r)
  local counts = k('routes', 'count', date)
  redis.call('HINCRBY', counts, minute .. '|' .. route .. '|requests', n)
  redis.call('HINCRBY', counts, minute .. '|' .. route .. '|errors', errors)
  local latency = k('routes', 'latency', date, minute, route)
  redis.call('HINCRBY', latency, bucket, n)
  keep(counts, day_until(date))
  keep(latency, detail_until(date))
  local id = date .. ' ' .. minute .. '|' .. route
  if not seen_route[id] then
    seen_route[id] = true
    changed_routes[date] = changed_routes[date] or {}
    table.insert(changed_routes[date], {minute, route})
  end
end

-- nearest-rank quantiles of a DDSketch histogram: the representative of the bucket holding the rank
local function quantiles(latency, total, qs)
  local flat = redis.call('HGETALL', latency)
  local buckets = {}
  for i = 1, #flat, 2 do buckets[#buckets + 1] = {tonumber(flat[i]), tonumber(flat[i + 1])} end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  local out = {}
  for qi, q in ipairs(qs) do
    local rank, seen = math.max(1, math.ceil(q * total)), 0
    for _, bucket in ipairs(buckets) do
      seen = seen + bucket[2]
      if seen >= rank then
        out[qi] = 2 * gamma ^ bucket[1] / (gamma + 1)
        break
      end
    end
  end
  return out
end
for date, list in pairs(changed_routes) do
  local counts, fragments = k('routes', 'count', date), k('routes', 'minute', date)
  for _, mr in ipairs(list) do
    local minute, route = mr[1], mr[2]
    local requests = tonumber(redis.call('HGET', counts, minute .. '|' .. route .. '|requests') or '0')
    local errors = redis.call('HGET', counts, minute .. '|' .. route .. '|errors') or '0'
    local q = quantiles(k('routes', 'latency', date, minute, route), requests, {0.5, 0.95})
    redis.call('HSET', fragments, minute .. '|' .. route, '{"requests":' .. int(requests) .. ',"errors":' .. errors
      .. ',"p50_ms":' .. string.format('%.3f', q[1] or 0) .. ',"p95_ms":' .. string.format('%.3f', q[2] or 0) .. '}')
    keep(fragments, day_until(date))
  end
end

-- 6. lifetimes, then eviction in event time
for key, until_ms in pairs(kept) do
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', evict, until_ms, key)
end
local expired = redis.call('ZRANGEBYSCORE', evict, '-inf', '(' .. b['clock'])
for i = 1, #expired, 500 do
  redis.call('DEL', unpack(expired, i, math.min(i + 499, #expired)))
end
redis.call('ZREMRANGEBYSCORE', evict, '-inf', '(' .. b['clock'])

-- 7. publish today's channels: those that changed, and any still showing another day
if today ~= '' then
  local channel_keys = {}
  for i = 0, 5 do channel_keys[ARGV[8 + i]] = stream_keys(2 + 5 * i) end
  local bound = history_bound(ARGV[14], ARGV[15])
  local function snapshot_field(channel, field)
    local snap = redis.call('GET', channel_keys[channel][1])
    if not snap then return nil end
    local ok, envelope = pcall(cjson.decode, snap)
    if ok and type(envelope) == 'table' and type(envelope['data']) == 'table' then return envelope['data'][field] end
    return nil
  end
  local function publish(channel, snapshot_data, live_data)
    publish_envelope(channel_keys[channel], channel, snapshot_data, live_data, bound)
  end
  local function ranking(zset, top, field)
    local flat = redis.call('ZRANGE', zset, 0, top - 1, 'WITHSCORES')
    local parts = {}
    for i = 1, #flat, 2 do
      parts[#parts + 1] = '{"' .. field .. '":' .. str(flat[i]) .. ',"count":' .. int(-tonumber(flat[i + 1])) .. '}'
    end
    return '[' .. table.concat(parts, ',') .. ']'
  end
  local date_json = '"date":' .. str(today)

  local c_today, c_minute, c_terms, c_recent, c_products, c_routes =
    ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]

  if today_changed or snapshot_field(c_today, 'date') ~= today then
    local day = k('traffic', 'day', today)
    local function hget(field) return redis.call('HGET', day, field) or '0' end
    publish(c_today, '{' .. date_json .. ',"page_views":' .. hget('page_views')
      .. ',"visitors":' .. int(redis.call('PFCOUNT', k('traffic', 'visitors', today)))
      .. ',"logged_in_users":' .. int(redis.call('PFCOUNT', k('traffic', 'users', today)))
      .. ',"searches":' .. hget('searches') .. ',"bot_requests":' .. hget('bot_requests') .. '}')
  end

  local new_day = snapshot_field(c_minute, 'date') ~= today
  if today_changed or new_day then
    local function minute_hash(figure) return k('traffic', 'minute', today, figure) end
    local function minutes_json(names)
      table.sort(names)
      local parts = {}
      for _, m in ipairs(names) do
        local entry = {}
        for _, figure in ipairs({'page_views', 'visitors', 'requests', 'errors'}) do
          entry[#entry + 1] = '"' .. figure .. '":' .. (redis.call('HGET', minute_hash(figure), m) or '0')
        end
        parts[#parts + 1] = str(m) .. ':{' .. table.concat(entry, ',') .. '}'
      end
      return '{' .. date_json .. ',"minutes":{' .. table.concat(parts, ',') .. '}}'
    end
    local all = minutes_json(redis.call('HKEYS', minute_hash('requests')))
    local live = nil
    if not new_day then
      local names = {}
      for m, _ in pairs(changed_minutes) do names[#names + 1] = m end
      live = minutes_json(names)
    end
    publish(c_minute, all, live)
  end

  if terms_changed or snapshot_field(c_terms, 'date') ~= today then
    publish(c_terms, '{' .. date_json .. ',"terms":' .. ranking(k('search', 'terms', today), 20, 'term') .. '}')
  end

  if recent_changed or snapshot_field(c_recent, 'window_end') ~= b['window_end'] then
    local sources = {}
    for _, m in ipairs(b['window']) do sources[#sources + 1] = k('search', 'terms', m[1], m[2]) end
    local scratch = k('search', 'terms', 'recent', 'scratch')
    redis.call('ZUNIONSTORE', scratch, #sources, unpack(sources))
    local terms = ranking(scratch, 10, 'term')
    redis.call('DEL', scratch)
    publish(c_recent, '{"window_start":' .. str(b['window_start']) .. ',"window_end":' .. str(b['window_end'])
      .. ',"terms":' .. terms .. '}')
  end

  if products_changed or snapshot_field(c_products, 'date') ~= today then
    publish(c_products, '{' .. date_json .. ',"products":'
      .. ranking(k('search', 'products', today), 20, 'product_id') .. '}')
  end

  local routes_new_day = snapshot_field(c_routes, 'date') ~= today
  if changed_routes[today] or routes_new_day then
    local fragments = k('routes', 'minute', today)
    local function routes_json(pairs_list)
      local by_minute, order = {}, {}
      for _, mr in ipairs(pairs_list) do
        local minute, route = mr[1], mr[2]
        if not by_minute[minute] then
          by_minute[minute] = {}
          order[#order + 1] = minute
        end
        local fragment = redis.call('HGET', fragments, minute .. '|' .. route)
        if fragment then table.insert(by_minute[minute], str(route) .. ':' .. fragment) end
      end
      table.sort(order)
      local parts = {}
      for _, minute in ipairs(order) do
        table.sort(by_minute[minute])
        parts[#parts + 1] = str(minute) .. ':{' .. table.concat(by_minute[minute], ',') .. '}'
      end
      return '{' .. date_json .. ',"minutes":{' .. table.concat(parts, ',') .. '}}'
    end
    local everything = {}
    for _, field in ipairs(redis.call('HKEYS', fragments)) do
      local bar = string.find(field, '|', 1, true)
      everything[#everything + 1] = {string.sub(field, 1, bar - 1), string.sub(field, bar + 1)}
    end
    local live = nil
    if not routes_new_day then
      -- a live message carries every route of each minute this batch changed
      local minutes = {}
      for _, mr in ipairs(changed_routes[today]) do minutes[mr[1]] = true end
      local list = {}
      for _, mr in ipairs(everything) do if minutes[mr[1]] then list[#list + 1] = mr end end
      live = routes_json(list)
    end
    publish(c_routes, routes_json(everything), live)
  end
end

remember_batch()
return 1
