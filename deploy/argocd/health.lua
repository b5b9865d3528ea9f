-- Argo CD health check for wmlstream.dev/v1alpha1 StreamingDeployment and PublishedModel (the same script
-- for both: a PublishedModel has no wmlStatus and no spec.state, so only the conditions speak for it).
-- Argo CD runs it with the live object as the global `obj` and reads back {status = ..., message = ...}.
-- It reads only what the operator writes for every tool alike (status.observedGeneration, status.wmlStatus
-- and the kstatus conditions Ready/Reconciling/Stalled), so Argo CD, Flux and `kubectl wait` agree.
-- Install: docs/gitops/argocd.md (resource.customizations.health.wmlstream.dev_StreamingDeployment, and the
-- same script as resource.customizations.health.wmlstream.dev_PublishedModel).

local function find_condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

-- The first argument that is a non-empty string.
local function first_text(...)
  for i = 1, select("#", ...) do
    local text = select(i, ...)
    if type(text) == "string" and text ~= "" then
      return text
    end
  end
  return nil
end

local hs = {}
local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

-- Not yet seen by the operator, or seen at an older generation: what status says is about an old spec.
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local ready = find_condition(status, "Ready")
local stalled = find_condition(status, "Stalled")
local ready_message = nil
if ready ~= nil then
  ready_message = ready.message
end

-- Stalled: the operator cannot go on without a fix from the user (invalid spec, missing Secret, ...).
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = first_text(stalled.message, stalled.reason, "Stalled")
  return hs
end

-- The stream itself failed in WML (broker or auth failure, ...), whatever the operator does about it.
if status.wmlStatus == "FAILED" then
  hs.status = "Degraded"
  hs.message = first_text(status.message, ready_message, "The WML deployment FAILED")
  return hs
end

-- Ready: WML reports the declared state. A stream stopped on purpose is Suspended, not Healthy.
if ready ~= nil and ready.status == "True" then
  if obj.spec ~= nil and obj.spec.state == "STOPPED" then
    hs.status = "Suspended"
    hs.message = "Stopped as declared"
  else
    hs.status = "Healthy"
    hs.message = first_text(ready_message, "Running as declared")
  end
  return hs
end

-- On its way (INITIALIZING, starting, stopping, retrying after a transient error).
hs.status = "Progressing"
hs.message = first_text(ready_message, "Waiting for the operator")
return hs
