-- API keys and their plans, read by policy.lua through require "keys".
-- Edit and save: pixgate reloads the policy (this whole folder) within a moment.
return {
  ["demo-free"]       = { plan = "free" },
  ["demo-pro"]        = { plan = "pro" },
  ["demo-enterprise"] = { plan = "enterprise" },
  ["demo-blocked"]    = { plan = "free", blocked = true },
  ["demo-lapsed"]     = { plan = "none" },
}
