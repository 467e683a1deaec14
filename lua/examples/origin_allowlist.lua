-- Each customer may only transform images from its own origins. The customer is the
-- signing tenant (keys in the config) or, for unsigned setups, the API key.
local origins = {
  acme = { "img.acme.example", ".cdn.acme.example" },   -- ".x" also allows subdomains
  globex = { "static.globex.example" },
}

local function host_allowed(host, list)
  for _, allowed in ipairs(list) do
    if host == allowed then return true end
    if allowed:sub(1, 1) == "." and host:sub(-#allowed) == allowed then return true end
  end
  return false
end

function decide(req)
  local customer = req.tenant or req.key
  local list = customer and origins[customer]
  if list == nil then
    return { allow = false, status = 401, reason = "Unknown customer" }
  end
  -- local:// sources (no host) are the operator's own files.
  if req.source_host ~= nil and not host_allowed(req.source_host, list) then
    return { allow = false, status = 403, reason = "Source host not allowed for this account" }
  end
  return { allow = true, bucket = "customer:" .. customer, rate = 500, burst = 1000 }
end

tests = {
  { name = "own origin", req = { key = "acme", source_host = "img.acme.example" },
    expect = { allow = true, bucket = "customer:acme", rate = 500 } },
  { name = "own subdomain", req = { tenant = "acme", key = false, source_host = "eu.cdn.acme.example" },
    expect = { allow = true, bucket = "customer:acme" } },
  { name = "someone else's origin", req = { key = "globex", source_host = "img.acme.example" },
    expect = { allow = false, status = 403 } },
  { name = "local and uploaded sources", req = { key = "globex", source_host = false },
    expect = { allow = true, bucket = "customer:globex" } },
  { name = "unknown customer", req = { key = "initech" }, expect = { allow = false, status = 401 } },
  { name = "no key, no tenant", req = { key = false }, expect = { allow = false, status = 401 } },
}
