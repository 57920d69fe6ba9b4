-- wrk script for bench/run.sh with PACE_MS: every connection waits PACE_MS milliseconds
-- after each answer before its next request, so the offered load is fixed below saturation
-- (64 connections at 4 ms: at most 16,000 requests/s) instead of as much as the proxy takes.
-- wrk measures each request from its send, so the wait is not in the latency.
local pace = tonumber(os.getenv("PACE_MS") or "4")
function delay()
  return pace
end
