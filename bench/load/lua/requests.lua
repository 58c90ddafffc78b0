-- wrk script shared by every HTTP scenario of the c2s-api benchmark.
--
-- Requests come from a file written by the runner (BENCH_REQUESTS), one per line:
--   METHOD <TAB> PATH [<TAB> BODY]
-- BENCH_MODE picks how lines are used:
--   cycle   every thread walks the whole list round-robin (lookups, hot path);
--   unique  thread t of T takes lines t, t+T, t+2T... so no line is sent twice (leads: a
--           lead id seen twice is answered by the dedup and would flatter the figure); running
--           out wraps around and is reported as "wrapped" so the runner can reject the point;
--   counter every "@N@" in the line is replaced by a token unique to the run, thread and
--           request (webhooks: each event must be new, or it is counted as a duplicate).
-- BENCH_HEADERS: extra headers, "Name: value" separated by "|" (the API key).
-- BENCH_NONCE: makes counter tokens unique across runs.
--
-- done() prints one line "BENCH_JSON {...}" with the counts and latency percentiles (us).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function split(line, sep)
  local out = {}
  local start = 1
  while true do
    local i = string.find(line, sep, start, true)
    if not i then
      table.insert(out, string.sub(line, start))
      return out
    end
    table.insert(out, string.sub(line, start, i - 1))
    start = i + #sep
  end
end

local lines = {}
local prepared = {}
local mode = "cycle"
local nonce = "n"
local index = 0
local step = 1
wrapped = 0
sent = 0

function init(args)
  mode = os.getenv("BENCH_MODE") or "cycle"
  nonce = os.getenv("BENCH_NONCE") or "n"
  local headers = os.getenv("BENCH_HEADERS")
  if headers and #headers > 0 then
    for _, pair in ipairs(split(headers, "|")) do
      local name, value = string.match(pair, "^([^:]+):%s*(.*)$")
      if name then wrk.headers[name] = value end
    end
  end
  local path = os.getenv("BENCH_REQUESTS")
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in file:lines() do
    if #line > 0 then
      local parts = split(line, "\t")
      table.insert(lines, { parts[1], parts[2], parts[3] })
    end
  end
  file:close()
  assert(#lines > 0, "no request in " .. path)
  -- setup() set the global "tid" in this thread's Lua state.
  tid = tonumber(tid) or 0
  local nthreads = tonumber(os.getenv("BENCH_THREADS")) or 1
  if mode == "unique" then
    index = tid
    step = nthreads
  else
    -- Start each thread at a different place so threads do not hit the same key in lockstep.
    index = (tid * 7919) % #lines
    step = 1
  end
  if mode ~= "counter" then
    for i, l in ipairs(lines) do
      prepared[i] = wrk.format(l[1], l[2], nil, l[3])
    end
  end
  tid_text = tostring(tid)
end

function request()
  if mode == "unique" and index >= #lines then
    -- Out of fresh lines: start over (reported; the runner rejects such a point).
    wrapped = wrapped + 1
    index = index % step
  end
  local i = index % #lines
  index = index + step
  sent = sent + 1
  if mode == "counter" then
    counter = counter + 1
    local token = nonce .. "t" .. tid_text .. "n" .. counter
    local l = lines[i + 1]
    local body = l[3] and string.gsub(l[3], "@N@", token) or nil
    local path = string.gsub(l[2], "@N@", token)
    return wrk.format(l[1], path, nil, body)
  end
  return prepared[i + 1]
end

function done(summary, latency, requests)
  local total_wrapped = 0
  for _, t in ipairs(threads) do
    total_wrapped = total_wrapped + (tonumber(t:get("wrapped")) or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d},"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, total_wrapped))
end
