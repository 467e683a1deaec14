-- Per-key plans with self-contained tables: copy to lua/policy.lua to use.
-- Unknown keys are refused; requests without a key are refused too (a private API).
local plans = {
  free = { rate = 10, burst = 10 },
  pro = { rate = 200, burst = 400 },
  -- Big customers: 2,000 requests per second, bursts of 5,000.
  enterprise = { rate = 2000, burst = 5000 },
  -- Slow lane for batch jobs: 600 per minute.
  batch = { rate = 600, per = 60, burst = 50 },
}

local keys = {
  ["k-free-1"] = "free",
  ["k-pro-1"] = "pro",
  ["k-big-1"] = "enterprise",
  ["k-batch-1"] = "batch",
  ["k-abuser"] = false, -- revoked
}

function decide(req)
  if req.key == nil then
    return { allow = false, status = 401, reason = "An API key is required (X-Api-Key)" }
  end
  local plan_name = keys[req.key]
  if plan_name == false then
    return { allow = false, status = 403, reason = "This API key was revoked" }
  end
  local plan = plans[plan_name or ""]
  if plan == nil then
    return { allow = false, status = 401, reason = "Unknown API key" }
  end
  return { allow = true, bucket = "key:" .. req.key,
           rate = plan.rate, per = plan.per, burst = plan.burst }
end

tests = {
  { name = "no key", req = { key = false }, expect = { allow = false, status = 401 } },
  { name = "free", req = { key = "k-free-1" }, expect = { allow = true, rate = 10, burst = 10 } },
  { name = "pro", req = { key = "k-pro-1" }, expect = { allow = true, rate = 200, burst = 400 } },
  { name = "enterprise", req = { key = "k-big-1" }, expect = { allow = true, burst = 5000 } },
  { name = "batch: per minute", req = { key = "k-batch-1" },
    expect = { allow = true, rate = 600, per = 60, burst = 50 } },
  { name = "revoked", req = { key = "k-abuser" }, expect = { allow = false, status = 403 } },
  { name = "unknown", req = { key = "k-nope" }, expect = { allow = false, status = 401 } },
}
