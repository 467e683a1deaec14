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
