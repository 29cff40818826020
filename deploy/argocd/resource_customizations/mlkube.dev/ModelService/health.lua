-- Argo CD health check for mlkube.dev/ModelService (Lua 5.1, as embedded by Argo CD).
-- Input: the live object in the global `obj`. Output: a table with `status` and `message`.
--   Healthy      Ready=True (or scaled to zero on purpose), no canary in flight, not degraded
--   Progressing  the operator has not caught up yet, a canary is running, pods are coming up
--   Suspended    a canary is held by spec.rollout.paused (status.rollout.paused)
--   Degraded     a rollback happened (Degraded=True, rollout phase RolledBack/Failed) or the
--                operator reports the spec or the pods as broken
local hs = { status = "Progressing", message = "Waiting for the mlkube operator to reconcile" }

local function find_condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status, "Ready")
local progressing = find_condition(status, "Progressing")
local degraded = find_condition(status, "Degraded")
local rollout = status.rollout
local phase = rollout and rollout.phase

if phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = text(degraded, (rollout.message ~= nil and rollout.message ~= "") and rollout.message
    or ("Rollout " .. phase))
  return hs
end

if is_true(degraded) then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded")
  return hs
end

if phase == "Progressing" or phase == "Promoting" then
  local paused = rollout.paused == true
    or (obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true)
  local weight = tostring(rollout.canaryWeight or 0) .. "%"
  local message = rollout.message
  if message == nil or message == "" then
    message = "canary " .. (rollout.canaryRevision or "") .. " at " .. weight
  elseif phase == "Progressing" and string.find(message, weight, 1, true) == nil then
    -- e.g. "waiting: 37 requests < minSampleCount 100": say where the canary stands
    message = "canary at " .. weight .. ", " .. message
  end
  if paused then
    hs.status = "Suspended"
  end
  hs.message = message
  return hs
end

if is_true(progressing) then
  hs.message = text(progressing, "Progressing")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

-- Scaled to zero on purpose (spec.replicas: 0): nothing is wrong, like a Deployment at 0.
if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Healthy"
  hs.message = text(ready, "scaled to zero")
  return hs
end

hs.message = text(ready, "Waiting for the model pods to become ready")
return hs
