-- Hotlink protection: images load only on the customer's own pages. Requests without a
-- Referer (privacy settings, direct visits, apps) are allowed: refusing them breaks real
-- users, and a Referer is trivial to forge anyway, so this only stops casual embedding.
local sites = { "www.example.com", "example.com", "shop.example.com" }

local function referer_host(referer)
  -- "https://Host:port/path" -> "host"
  local host = referer:match("^%a[%w+.-]*://([^/:?#]+)")
  return host and host:lower()
end

function decide(req)
  if req.referer ~= nil then
    local host = referer_host(req.referer)
    local ok = false
    for _, site in ipairs(sites) do
      if host == site then ok = true break end
    end
    if not ok then
      return { allow = false, status = 403, reason = "Hotlinking is not allowed" }
    end
  end
  return { allow = true, bucket = "ip:" .. req.ip, rate = 50, burst = 100 }
end

tests = {
  { name = "no Referer", req = { referer = false }, expect = { allow = true, rate = 50 } },
  { name = "own page", req = { referer = "https://shop.example.com/cart" },
    expect = { allow = true, bucket = "ip:203.0.113.7" } },
  { name = "own page, upper case and a port", req = { referer = "https://WWW.Example.com:8443/" },
    expect = { allow = true } },
  { name = "someone else's page", req = { referer = "https://evil.example/page" },
    expect = { allow = false, status = 403 } },
}
