"""The watch-fed object cache, manifest fingerprints and what the operator last applied."""

from __future__ import annotations

from typing import Any

from mlkube.operator.cache import AppliedMemory, ObjectCache, digest, marker

OWNER = "mlkube.dev/modelservice"


def obj(
    name: str,
    version: str | None = "1",
    *,
    namespace: str = "ml",
    owner: str | None = None,
    uid: str = "u-1",
    generation: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
    if version is not None:
        meta["resourceVersion"] = version
    if owner is not None:
        meta["labels"] = {OWNER: owner}
    if generation is not None:
        meta["generation"] = generation
    return {"metadata": meta, **extra}


def cache() -> ObjectCache:
    return ObjectCache(owner_labels={"Pod": (OWNER,), "Deployment": (OWNER,)})


def names(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["metadata"]["name"] for b in bodies]


# ---------------------------------------------------------------- versions


def test_an_event_stores_the_body() -> None:
    c = cache()
    body = obj("web", "5")
    assert c.seen("Deployment", None, body)  # the initial listing has no event type
    assert c.get("Deployment", "ml", "web") is body
    assert c.get("Deployment", "other", "web") is None
    assert c.get("Service", "ml", "web") is None


def test_an_older_event_after_a_newer_write_does_not_replace_it() -> None:
    c = cache()
    written = obj("web", "10", spec={"replicas": 3})
    assert c.wrote("Deployment", written)
    assert not c.seen("Deployment", "MODIFIED", obj("web", "9", spec={"replicas": 1}))
    assert c.get("Deployment", "ml", "web") is written


def test_only_a_newer_version_replaces() -> None:
    """The watch's echo of the operator's own write (same version) is nothing new: no
    change, so no pass is queued for it."""
    c = cache()
    written = obj("web", "10")
    c.wrote("Deployment", written)
    echo = obj("web", "10", spec={"x": 1})
    assert not c.seen("Deployment", "MODIFIED", echo)
    assert c.get("Deployment", "ml", "web") is written
    newer = obj("web", "11")
    assert c.seen("Deployment", "MODIFIED", newer)
    assert c.get("Deployment", "ml", "web") is newer


def test_versions_compare_as_integers_not_strings() -> None:
    c = cache()
    c.wrote("Deployment", obj("web", "100"))
    assert not c.seen("Deployment", "MODIFIED", obj("web", "99"))
    assert c.seen("Deployment", "MODIFIED", obj("web", "1000"))


def test_a_version_that_is_not_an_integer_is_taken_as_newer() -> None:
    c = cache()
    c.wrote("Deployment", obj("web", "50"))
    odd = obj("web", "abc")
    assert c.seen("Deployment", "MODIFIED", odd)
    assert c.get("Deployment", "ml", "web") is odd
    # and with a non-integer version cached, anything replaces it
    low = obj("web", "1")
    assert c.seen("Deployment", "MODIFIED", low)
    assert c.get("Deployment", "ml", "web") is low
    missing = obj("web", None)
    assert c.wrote("Deployment", missing)
    assert c.get("Deployment", "ml", "web") is missing


def test_an_object_without_a_name_is_ignored() -> None:
    c = cache()
    assert not c.wrote("Deployment", {"metadata": {"namespace": "ml"}})
    assert not c.wrote("Deployment", {})
    assert c.count("Deployment") == 0


def test_count_and_keys_are_per_kind() -> None:
    c = cache()
    c.wrote("Deployment", obj("a"))
    c.wrote("Deployment", obj("b", namespace="prod"))
    c.wrote("Service", obj("a"))
    assert c.count("Deployment") == 2
    assert sorted(c.keys("Deployment")) == [("Deployment", "ml", "a"), ("Deployment", "prod", "b")]
    assert list(c.keys("Service")) == [("Service", "ml", "a")]


# ---------------------------------------------------------------- deletion


def test_deleted_removes_the_object() -> None:
    c = cache()
    c.wrote("Deployment", obj("web", "3", uid="u-1"))
    assert c.seen("Deployment", "DELETED", obj("web", "4", uid="u-1"))
    assert c.get("Deployment", "ml", "web") is None
    assert not c.seen("Deployment", "DELETED", obj("web", "4", uid="u-1"))  # already gone


def test_a_deleted_event_of_a_predecessor_keeps_the_successor() -> None:
    c = cache()
    successor = obj("web", "20", uid="u-2")
    c.wrote("Deployment", successor)
    assert not c.seen("Deployment", "DELETED", obj("web", "19", uid="u-1"))
    assert c.get("Deployment", "ml", "web") is successor


def test_a_stale_event_after_the_deletion_does_not_bring_the_object_back() -> None:
    """kopf hands each object's events to its own task: the watch's first listing of a pod
    can be processed after the DELETED event that followed it (seen as a PyTorchJob
    counting one failed pod twice)."""
    c = cache()
    c.seen("Pod", None, obj("w-0", "5", owner="job", uid="old", status={"phase": "Failed"}))
    assert c.seen("Pod", "DELETED", obj("w-0", "7", owner="job", uid="old"))
    assert not c.seen("Pod", None, obj("w-0", "5", owner="job", uid="old"))
    assert c.get("Pod", "ml", "w-0") is None
    assert c.owned("Pod", "ml", OWNER, "job") == []
    # its successor under the same name is a new object
    assert c.seen("Pod", "ADDED", obj("w-0", "9", owner="job", uid="new"))
    assert names(c.owned("Pod", "ml", OWNER, "job")) == ["w-0"]


def test_a_deleted_event_for_an_unknown_object_still_buries_its_uid() -> None:
    c = cache()
    assert not c.seen("Pod", "DELETED", obj("w-0", "7", uid="old"))
    assert not c.seen("Pod", None, obj("w-0", "5", uid="old"))
    assert c.get("Pod", "ml", "w-0") is None


def test_an_object_this_operator_deleted_shows_terminating_until_the_watch_says() -> None:
    c = cache()
    c.seen("Pod", None, obj("w-0", "5", uid="u", status={"phase": "Failed"}))
    c.deleting("Pod", obj("w-0", "5", uid="u"), "2026-12-03T10:00:00Z")
    marked = c.get("Pod", "ml", "w-0")
    assert marked is not None
    assert marked["metadata"]["deletionTimestamp"] == "2026-12-03T10:00:00Z"
    c.deleting("Pod", obj("w-0", "5", uid="other"), "2026-12-03T11:00:00Z")  # not this one
    assert c.get("Pod", "ml", "w-0")["metadata"]["deletionTimestamp"] == "2026-12-03T10:00:00Z"  # type: ignore[index]
    assert c.seen("Pod", "MODIFIED", obj("w-0", "6", uid="u"))  # the real event wins
    assert "deletionTimestamp" not in c.get("Pod", "ml", "w-0")["metadata"]  # type: ignore[index]


def test_a_deleted_event_without_uid_removes_by_name() -> None:
    c = cache()
    c.wrote("Deployment", obj("web", "3", uid="u-1"))
    body = obj("web", "4")
    del body["metadata"]["uid"]
    assert c.removed("Deployment", body)
    assert c.get("Deployment", "ml", "web") is None


# ---------------------------------------------------------------- owner index


def test_owned_lists_children_of_one_owner_sorted_by_name() -> None:
    c = cache()
    c.wrote("Pod", obj("web-b", owner="web"))
    c.wrote("Pod", obj("web-a", owner="web"))
    c.wrote("Pod", obj("api-a", owner="api"))
    c.wrote("Pod", obj("web-c", owner="web", namespace="prod"))
    c.wrote("Pod", obj("loose"))
    assert names(c.owned("Pod", "ml", OWNER, "web")) == ["web-a", "web-b"]
    assert names(c.owned("Pod", "ml", OWNER, "api")) == ["api-a"]
    assert names(c.owned("Pod", "prod", OWNER, "web")) == ["web-c"]
    assert c.owned("Pod", "ml", OWNER, "nobody") == []
    assert c.owned("Deployment", "ml", OWNER, "web") == []


def test_owned_returns_the_latest_body() -> None:
    c = cache()
    c.wrote("Pod", obj("web-a", "1", owner="web", status={"phase": "Pending"}))
    c.seen("Pod", "MODIFIED", obj("web-a", "2", owner="web", status={"phase": "Running"}))
    [pod] = c.owned("Pod", "ml", OWNER, "web")
    assert pod["status"]["phase"] == "Running"


def test_a_relabelled_child_moves_to_its_new_owner() -> None:
    c = cache()
    c.wrote("Pod", obj("p", "1", owner="old"))
    c.seen("Pod", "MODIFIED", obj("p", "2", owner="new"))
    assert c.owned("Pod", "ml", OWNER, "old") == []
    assert names(c.owned("Pod", "ml", OWNER, "new")) == ["p"]
    c.seen("Pod", "MODIFIED", obj("p", "3"))  # label removed
    assert c.owned("Pod", "ml", OWNER, "new") == []


def test_a_stale_relabel_does_not_move_the_child() -> None:
    c = cache()
    c.wrote("Pod", obj("p", "5", owner="old"))
    c.seen("Pod", "MODIFIED", obj("p", "4", owner="new"))
    assert names(c.owned("Pod", "ml", OWNER, "old")) == ["p"]
    assert c.owned("Pod", "ml", OWNER, "new") == []


def test_a_removed_child_leaves_the_index() -> None:
    c = cache()
    c.wrote("Pod", obj("web-a", owner="web"))
    c.wrote("Pod", obj("web-b", owner="web"))
    c.seen("Pod", "DELETED", obj("web-a", owner="web"))
    assert names(c.owned("Pod", "ml", OWNER, "web")) == ["web-b"]
    c.seen("Pod", "DELETED", obj("web-b", owner="web"))
    assert c.owned("Pod", "ml", OWNER, "web") == []


def test_a_kind_without_owner_labels_is_not_indexed() -> None:
    c = cache()
    c.wrote("Service", obj("web", owner="web"))
    assert c.owned("Service", "ml", OWNER, "web") == []
    assert c.get("Service", "ml", "web") is not None


# ---------------------------------------------------------------- digest and marker


def test_digest_ignores_key_order_at_every_level() -> None:
    a = {"kind": "Deployment", "spec": {"replicas": 2, "template": {"x": 1, "y": [1, 2]}}}
    b = {"spec": {"template": {"y": [1, 2], "x": 1}, "replicas": 2}, "kind": "Deployment"}
    assert digest(a) == digest(b)


def test_digest_changes_with_any_value() -> None:
    a = {"spec": {"replicas": 2, "items": [1, 2]}}
    assert digest(a) != digest({"spec": {"replicas": 3, "items": [1, 2]}})
    assert digest(a) != digest({"spec": {"replicas": 2, "items": [2, 1]}})  # lists keep order
    assert digest(a) != digest({"spec": {"replicas": "2", "items": [1, 2]}})


def test_marker_uses_generation_when_present() -> None:
    before = obj("web", "10", uid="u-1", generation=3)
    status_only = obj("web", "11", uid="u-1", generation=3)  # a status update
    spec_change = obj("web", "12", uid="u-1", generation=4)
    assert marker(before) == marker(status_only)
    assert marker(before) != marker(spec_change)


def test_marker_uses_the_resource_version_without_generation() -> None:
    assert marker(obj("svc", "10")) != marker(obj("svc", "11"))
    assert marker(obj("svc", "10")) == marker(obj("svc", "10"))


def test_marker_includes_the_uid() -> None:
    assert marker(obj("web", "10", uid="u-1", generation=1)) != marker(
        obj("web", "10", uid="u-2", generation=1)
    )
    assert marker(obj("svc", "10", uid="u-1")) != marker(obj("svc", "10", uid="u-2"))


# ---------------------------------------------------------------- applied memory

DEP = ("Deployment", "ml", "web")


def test_unchanged_only_for_the_same_manifest_manager_and_live_child() -> None:
    m = AppliedMemory()
    live = obj("web", "10", generation=2)
    assert not m.unchanged(DEP, "mlkube", "sha-a", live)  # never applied
    m.remember(DEP, "mlkube", "sha-a", live)
    assert m.unchanged(DEP, "mlkube", "sha-a", live)
    assert m.unchanged(DEP, "mlkube", "sha-a", obj("web", "11", generation=2))  # status moved
    assert not m.unchanged(DEP, "mlkube", "sha-b", live)  # a new manifest
    assert not m.unchanged(DEP, "other-manager", "sha-a", live)
    assert not m.unchanged(DEP, "mlkube", "sha-a", obj("web", "12", generation=3))  # edited
    assert not m.unchanged(DEP, "mlkube", "sha-a", obj("web", "10", uid="u-9", generation=2))


def test_matches_whether_the_live_child_is_as_last_applied() -> None:
    m = AppliedMemory()
    live = obj("web", "10", generation=2)
    assert not m.matches(DEP, live)
    m.remember(DEP, "mlkube", "sha-a", live)
    assert m.matches(DEP, live)
    assert not m.matches(DEP, obj("web", "13", generation=5))
    assert not m.matches(("Deployment", "ml", "web-canary"), live)


def test_forget_drops_the_object_and_its_tracks_only_in_its_namespace() -> None:
    m = AppliedMemory()
    keep_other_ns = ("Deployment", "prod", "web")
    keep_prefix = ("Deployment", "ml", "webapp")
    gone = [
        ("Deployment", "ml", "web"),
        ("Service", "ml", "web"),
        ("Deployment", "ml", "web-canary"),
    ]
    for key in [*gone, keep_other_ns, keep_prefix]:
        m.remember(key, "mlkube", "sha", obj(key[2], namespace=key[1]))
    assert len(m) == 5
    m.forget("ml", "web")
    assert len(m) == 2
    for key in gone:
        assert not m.matches(key, obj(key[2], namespace=key[1]))
        assert not m.unchanged(key, "mlkube", "sha", obj(key[2], namespace=key[1]))
    assert m.matches(keep_other_ns, obj("web", namespace="prod"))
    assert m.matches(keep_prefix, obj("webapp"))


def test_the_cache_keeps_no_managed_fields_except_for_deployments() -> None:
    """managedFields are most of an object's size; only the HPA handover reads them (on a
    Deployment). A thousand ModelServices' children must fit the operator's memory."""
    c = cache()
    fields = [{"manager": "mlkube", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    copy = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"}
    pod = obj("p", "2")
    pod["metadata"]["managedFields"] = fields
    pod["metadata"]["annotations"] = copy
    c.wrote("Pod", pod)
    stored = c.get("Pod", "ml", "p")
    assert stored is not None
    assert "managedFields" not in stored["metadata"]
    assert stored["metadata"]["annotations"] == {"keep": "me"}
    assert pod["metadata"]["managedFields"] == fields  # the caller's object is untouched
    dep = obj("d", "1")
    dep["metadata"]["managedFields"] = fields
    c.wrote("Deployment", dep)
    assert c.get("Deployment", "ml", "d")["metadata"]["managedFields"] == fields  # type: ignore[index]
