-- One flush of a process's diagnostics tally (proto/src/diag/mod.rs).
-- KEYS[1]: the minute's bucket (a hash), KEYS[2]: the recent attempts (a stream).
-- ARGV[1]: the bucket's TTL (seconds), ARGV[2]: the recent stream's length
-- bound, ARGV[3]: n, the number of field/increment pairs, then the n pairs,
-- then the recent attempts (JSON), oldest first.
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
if n > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
for i = 4 + 2 * n, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'a', ARGV[i])
end
return n
