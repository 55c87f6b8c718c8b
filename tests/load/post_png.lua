-- wrk script for tests/load/soak.sh: POST an example PNG to /predict.
-- SOAK_DELAY_MS (env) paces each connection (wrk's delay() hook) so that
-- connections x 1000 / delay approximates an offered rate; 0 = closed loop.
local f = assert(io.open(os.getenv("SOAK_IMAGE"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = "/predict"
wrk.body = body
wrk.headers["Content-Type"] = "image/png"
local d = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
if d > 0 then
    function delay() return d end
end
