-- Dashboard channel streams (rtdash/channels.py): prepended to every sink script that publishes.
-- A channel's keys come as a table in rtdash.channels.stream_keys order:
--   {snapshot, live, seq, epoch, history}
-- and its history bound as {size = envelopes, ms = age} (history_bound below).
-- Each envelope: '{"channel":...,"epoch":"...","seq":N,"data":...}'; the snapshot's has
-- '"snapshot":true' before "data", which stays last (the alerts script compares the data as text).

-- The bound of every channel's history, from the script's ARGV (RTDASH_PUSH_HISTORY_SIZE, _SECONDS).
local function history_bound(size, seconds)
  return {size = math.floor(tonumber(size)), ms = math.floor(tonumber(seconds) * 1000)}
end

-- The five keys of the channel whose keys start at KEYS[first].
local function stream_keys(first)
  return {KEYS[first], KEYS[first + 1], KEYS[first + 2], KEYS[first + 3], KEYS[first + 4]}
end

-- Publish one envelope: the next seq (a new epoch when the numbering starts again: INCR gave 1, or
-- the epoch is gone), the snapshot SET with the whole state, the live envelope (`live_data`, the
-- whole state when nil) appended to the history and PUBLISHed. Returns the seq.
local function publish_envelope(keys, channel, snapshot_data, live_data, bound)
  local snapshot, live, seq_key, epoch_key, history = keys[1], keys[2], keys[3], keys[4], keys[5]
  local seq = redis.call('INCR', seq_key)
  local epoch = redis.call('GET', epoch_key)
  if seq == 1 or not epoch then
    -- Redis's clock in microseconds: after a flush nothing else survives to tell epochs apart
    local now = redis.call('TIME')
    epoch = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('SET', epoch_key, epoch)
    redis.call('DEL', history)
  end
  local head = '{"channel":' .. cjson.encode(channel) .. ',"epoch":"' .. epoch .. '","seq":'
    .. string.format('%d', seq)
  local text = head .. ',"data":' .. (live_data or snapshot_data) .. '}'
  redis.call('SET', snapshot, head .. ',"snapshot":true,"data":' .. snapshot_data .. '}')
  if bound.size > 0 and bound.ms > 0 then
    local id = redis.call('XADD', history, 'MAXLEN', bound.size, '*', 'envelope', text)
    local now_ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', history, 'MINID', string.format('%d', now_ms - bound.ms))
    redis.call('PEXPIRE', history, bound.ms)
  else
    redis.call('DEL', history)
  end
  redis.call('PUBLISH', live, text)
  return seq
end
