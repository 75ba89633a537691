-- wrk script for bench/run: every request comes from the next device in a
-- list of many, so the server sees a fleet rather than one busy client.
--
--   wrk -s bench/telemetry.lua <url> -- <heartbeat|event|baseline> <devices file>
--
-- The devices file holds one "<client id> <client token>" per line. Each wrk
-- thread starts at its own place in the list. At the end, one line starting
-- with BENCH_JSON carries the numbers bench/run reads.
--
-- Every RECONNECT_EVERY-th request asks the server to close its connection
-- (wrk opens a new one). Devices do not hold one connection for ever, and
-- without it the few connections wrk opens at the start stay wherever they
-- landed: with several server workers, often nearly all on one of them.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local bodies = {
  heartbeat = '{"uptime_s": 123456.7, "metrics": {"load1": 0.12, "load5": 0.1, '
    .. '"load15": 0.05, "mem_percent": 41.2, "disk_percent": 63.0, "cpu_count": 4}}',
  event = '{"level": "info", "message": "service restarted", '
    .. '"data": {"unit": "nginx.service", "code": 0}}',
}
bodies.baseline = bodies.heartbeat

local RECONNECT_EVERY = 50

local mode, body
local devices = {}
local next_device = 0
local sent = 0

function init(args)
  mode = args[1]
  body = bodies[mode]
  assert(body, "mode must be heartbeat, event or baseline")
  for line in io.lines(args[2]) do
    local id, token = line:match("^(%S+)%s+(%S+)$")
    if id then
      devices[#devices + 1] = {id, "Bearer " .. token}
    end
  end
  assert(#devices > 0, "no devices in " .. args[2])
  -- Spread the threads over the list so they do not send the same devices.
  next_device = math.floor(#devices * (thread_index or 0) / 8) % #devices
end

function request()
  next_device = next_device % #devices + 1
  local device = devices[next_device]
  local path
  if mode == "heartbeat" then
    path = "/clients/" .. device[1] .. "/heartbeat"
  elseif mode == "event" then
    path = "/clients/" .. device[1] .. "/events"
  else
    path = "/bench/baseline"
  end
  local headers = {
    ["Authorization"] = device[2],
    ["Content-Type"] = "application/json",
  }
  sent = sent + 1
  if sent % RECONNECT_EVERY == 0 then
    headers["Connection"] = "close"
  end
  return wrk.format("POST", path, headers, body)
end

-- The latency distribution goes out as quantiles (percent, microseconds), so
-- that bench/run can merge the distributions of several runs.
local QUANTILES = {}
for p = 1, 99 do QUANTILES[#QUANTILES + 1] = p end
for p = 99.1, 99.95, 0.1 do QUANTILES[#QUANTILES + 1] = p end
QUANTILES[#QUANTILES + 1] = 99.99

function done(summary, latency, requests)
  local e = summary.errors
  local quantiles = {}
  for _, p in ipairs(QUANTILES) do
    quantiles[#quantiles + 1] = string.format("[%g, %d]", p, latency:percentile(p))
  end
  quantiles[#quantiles + 1] = string.format("[100, %d]", latency.max)
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"quantiles": [%s]}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(quantiles, ", ")))
end
