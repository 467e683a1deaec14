-- Incident switch: set INCIDENT = true and save to shed all traffic except internal keys,
-- with a Retry-After clients and CDNs honour. Set it back to false and save to recover.
local INCIDENT = false
local internal = { ["k-internal-monitoring"] = true, ["k-status-page"] = true }

function decide(req)
  if INCIDENT and not (req.key and internal[req.key]) then
    return { allow = false, status = 429, reason = "Temporarily unavailable, retry later",
             retry_after = 120 }
  end
  return { allow = true, bucket = "ip:" .. req.ip, rate = 100, burst = 200 }
end

-- With INCIDENT = true, add: { req = { key = "k-status-page" }, expect = { allow = true } }
-- and { req = { key = false }, expect = { allow = false, status = 429 } }.
tests = {
  { name = "normal operation", req = { key = false },
    expect = { allow = true, bucket = "ip:203.0.113.7", rate = 100, burst = 200 } },
  { name = "internal keys too", req = { key = "k-internal-monitoring" },
    expect = { allow = true, rate = 100 } },
}
