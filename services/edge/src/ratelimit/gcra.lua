-- GCRA (generic cell rate algorithm) on one key: the key holds the
-- "theoretical arrival time" (TAT, microseconds on Redis' clock) of the next
-- request. A request is granted when the TAT it would set is no more than
-- `burst` intervals ahead of now; every replica reads the same clock (TIME).
--
-- KEYS[1]  the limit's key
-- ARGV[1]  emission interval, microseconds (period / rate)
-- ARGV[2]  burst: requests granted at once from rest
-- ARGV[3]  how far in the future (microseconds) a grant may be scheduled:
--          0 grants only what is allowed now; more lets a request reserve a
--          later slot (it is deferred by the returned wait)
-- ARGV[4]  1 to record a grant, 0 to only look (peek)
--
-- Returns {granted (1|0), wait (microseconds)}: granted with wait > 0 means
-- "reserved for now + wait"; refused, wait is when a request would be granted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > horizon then
  return {0, wait - horizon}
end
if ARGV[4] == '1' then
  -- The key lives as long as it still says something: once the TAT is past,
  -- a missing key and a stored one mean the same.
  local ttl_ms = math.floor((new_tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
end
return {1, wait}
