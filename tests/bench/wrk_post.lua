-- wrk script of the benchmark: POST one fixed JSON body, stop after a cap on requests, and
-- print the run's figures as one JSON line for run.py.
--
--   wrk -t1 -cC -dDs --latency -s wrk_post.lua URL -- BODY_FILE VARIANT MAX_REQUESTS
--
-- VARIANT, unless "-", is sent as x-tuned-proxy-variant (the route allows the override).
-- The time bound is wrk's -d; MAX_REQUESTS bounds the count as well.

local prepared = nil
local cap = 0
local sent = 0

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local body = file:read("*a")
   file:close()
   local headers = { ["Content-Type"] = "application/json" }
   if args[2] and args[2] ~= "-" then
      headers["x-tuned-proxy-variant"] = args[2]
   end
   cap = assert(tonumber(args[3]), "MAX_REQUESTS must be a number")
   prepared = wrk.format("POST", nil, headers, body)
end

function request()
   sent = sent + 1
   if sent > cap then
      wrk.thread:stop()
   end
   return prepared
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"wrk":1,"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
