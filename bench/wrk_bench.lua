-- wrk script used by run_bench.sh. Configured through the environment:
--   BENCH_METHOD     GET or POST. Default: GET.
--   BENCH_PATHS      comma-separated request targets, rotated request by request (each thread
--                    starts at a different one). Default: the URL's path.
--   BENCH_BODY_FILE  file whose contents are the request body. Default: no body.
--   BENCH_AUTH       value of the Authorization header. Default: none.
--   BENCH_MAX        stop a thread after this many responses (bounded request count; a few
--                    requests already in flight on its connections still reach the server).
-- done() prints one machine-readable line:
--   WRK_RESULT requests=N duration_us=N rps=X p50_us=N p90_us=N p99_us=N max_us=N errors=N non2xx=N

local method = os.getenv("BENCH_METHOD") or "GET"
local auth = os.getenv("BENCH_AUTH")
local body_file = os.getenv("BENCH_BODY_FILE")
local max_responses = tonumber(os.getenv("BENCH_MAX") or "")

local body = nil
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
end

local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS") or "", "[^,]+") do
  table.insert(paths, p)
end

local thread_count = 0
function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local requests = {}
local counter = 0
function init(args)
  local headers = {}
  if auth and auth ~= "" then headers["Authorization"] = auth end
  if body then headers["Content-Type"] = "application/json" end
  if #paths == 0 then table.insert(paths, wrk.path) end
  -- Pre-format every distinct request once: the load generator shares the CPUs with the server.
  for i, p in ipairs(paths) do
    requests[i] = wrk.format(method, p, headers, body)
  end
  counter = (thread_index or 0)
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end

if max_responses then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen >= max_responses then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors, e.status))
end
