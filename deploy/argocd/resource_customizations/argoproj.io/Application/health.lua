-- Argo CD health check for argoproj.io/Application, so that an app-of-apps waits for each
-- child Application's own health before it syncs the next sync wave (Argo CD stopped
-- assessing Application health by default in v1.8). Lua 5.1.
local hs = { status = "Progressing", message = "Waiting for the Application to report its health" }
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  else
    hs.message = ""
  end
end
return hs
