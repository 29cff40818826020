-- Argo CD health check for mlkube.dev/PyTorchJob (Lua 5.1, as embedded by Argo CD).
-- A training job is a batch workload, so it reads like Argo CD's own check for a Job:
--   Healthy      Succeeded=True
--   Degraded     Failed=True (backoffLimit, activeDeadlineSeconds, a failed master...)
--   Suspended    Suspended=True (runPolicy.suspend)
--   Degraded     GangScheduling=False (the gang scheduler it asks for is not installed)
--   Progressing  not yet reconciled, Created, Running or Restarting
-- Kubeflow-style conditions accumulate (a finished job still lists Created and Running,
-- with Running turned False), so the terminal ones are checked first, by type.
local hs = { status = "Progressing", message = "Waiting for the mlkube operator to create the job's pods" }

local function find_condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind and c.status == "True" then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local c = find_condition(status, "Failed")
if c ~= nil then
  hs.status = "Degraded"
  hs.message = text(c, "PyTorchJob failed")
  return hs
end

c = find_condition(status, "Succeeded")
if c ~= nil then
  hs.status = "Healthy"
  hs.message = text(c, "PyTorchJob succeeded")
  return hs
end

c = find_condition(status, "Suspended")
if c ~= nil then
  hs.status = "Suspended"
  hs.message = text(c, "PyTorchJob is suspended")
  return hs
end

if status.conditions ~= nil then
  for _, g in ipairs(status.conditions) do
    if g.type == "GangScheduling" and g.status == "False" then
      hs.status = "Degraded"
      hs.message = text(g, "PyTorchJob waits for a gang scheduler")
      return hs
    end
  end
end

for _, kind in ipairs({ "Restarting", "Running", "Created" }) do
  c = find_condition(status, kind)
  if c ~= nil then
    hs.message = text(c, "PyTorchJob is " .. string.lower(kind))
    return hs
  end
end

return hs
