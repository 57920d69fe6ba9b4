-- wrk script for bench/run.sh with PACE_MS (or PACE_LOAD): every connection waits PACE_MS
-- milliseconds after each answer before its next request, so the offered load is fixed below
-- saturation (64 connections at 4 ms: at most 16,000 requests/s) instead of as much as the
-- proxy takes. wrk measures each request from its send, so the wait is not in the latency.
-- wrk takes whole milliseconds: a fractional PACE_MS is rounded up or down at random so that
-- the pauses average PACE_MS.
local pace = tonumber(os.getenv("PACE_MS") or "4")
local whole = math.floor(pace)
local fraction = pace - whole
math.randomseed(os.time())
function delay()
  if math.random() < fraction then
    return whole + 1
  end
  return whole
end
