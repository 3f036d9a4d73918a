"""A reconciler sees its own writes until its index shows them, and never a write older than the index."""

from typing import Any

from securemodel.operator import recent_writes
from securemodel.operator.kube import child_entry
from securemodel.operator.recent_writes import RecentWrites


def policy(name: str, version: str, port: int = 8443) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "resourceVersion": version}, "spec": {"port": port}}


def test_a_created_child_shows_until_the_index_shows_it_and_then_the_index_alone_decides() -> None:
    written = RecentWrites()
    written.wrote(policy("a-serve", "7"), None)
    assert written.over("NetworkPolicy", {}) == {"a-serve": policy("a-serve", "7")}
    assert written.over("NetworkPolicy", {}) == {"a-serve": policy("a-serve", "7")}  # still not shown: still kept
    assert written.over("NetworkPolicy", {"a-serve": policy("a-serve", "9")}) == {"a-serve": policy("a-serve", "9")}
    assert written.over("NetworkPolicy", {}) == {}  # deleted after the index showed it: not brought back


def test_an_update_shows_in_place_of_the_version_it_replaced_only() -> None:
    written = RecentWrites()
    before, after = policy("a-serve", "3", port=1), policy("a-serve", "8", port=2)
    written.wrote(after, before)
    assert written.over("NetworkPolicy", {"a-serve": before}) == {"a-serve": after}
    newer = policy("a-serve", "12", port=3)  # someone's edit after the write: the index wins from now on
    assert written.over("NetworkPolicy", {"a-serve": newer}) == {"a-serve": newer}
    assert written.over("NetworkPolicy", {"a-serve": before}) == {"a-serve": before}


def test_a_second_write_over_the_first_still_waits_for_the_index_to_move() -> None:
    written = RecentWrites()
    first, second = policy("a-serve", "5", port=1), policy("a-serve", "6", port=2)
    written.wrote(first, None)
    written.wrote(second, first)  # decided from the first write's response, which the index did not show yet
    assert written.over("NetworkPolicy", {}) == {"a-serve": second}


def test_nothing_written_is_nothing_kept_and_other_kinds_and_names_are_the_index_s() -> None:
    written = RecentWrites()
    written.wrote(None, None)  # a create that found the name taken
    written.wrote(policy("a-serve", "7"), None)
    secret = {"kind": "Secret", "metadata": {"name": "a-serve", "resourceVersion": "2"}}
    assert written.over("Secret", {"a-serve": secret}) == {"a-serve": secret}
    other = policy("b-serve", "4")
    assert written.over("NetworkPolicy", {"b-serve": other}) == {"a-serve": policy("a-serve", "7"), "b-serve": other}


def test_a_write_the_index_never_shows_is_dropped_after_the_kept_time() -> None:
    now = [100.0]
    written = RecentWrites(clock=lambda: now[0])
    written.wrote(policy("a-serve", "7"), None)
    now[0] += recent_writes.KEPT_SECONDS - 1
    assert "a-serve" in written.over("NetworkPolicy", {})
    now[0] += 2
    assert written.over("NetworkPolicy", {}) == {}


def test_a_written_job_is_kept_as_its_index_keeps_it_without_its_pod_template() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "a-train", "resourceVersion": "3", "managedFields": [{"manager": "securemodel-operator"}]},
        "spec": {"suspend": False, "template": {"spec": {"containers": [{"name": "train", "image": "worker"}]}}},
        "status": {"active": 1},
    }
    written = RecentWrites()
    written.wrote(job, None)
    shown = written.over("Job", {})["a-train"]
    assert shown == child_entry("Job", job)  # the same shape as the index's view once it shows the Job
    assert shown["spec"] == {"suspend": False} and shown["status"] == {"active": 1}
    assert "managedFields" not in shown["metadata"]
