"""The producer API: ``orchestrator.Producer`` and ``orchestrator.enqueue``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import orchestrator
from orchestrator import Producer, ReplicationTimeout
from tests.helpers import TextRedis


def write_config(tmp_path: Path, redis_url: str, **redis: object) -> Path:
    path = tmp_path / "workers.yaml"
    queues = {
        "ai_processing": {"command": ["true"], "label": "AI"},
        "reports": {"backend": "rq", "label": "RQ"},
    }
    path.write_text(yaml.safe_dump({"redis": {"url": redis_url, **redis}, "queues": queues}))
    return path


def test_jobs_go_on_the_stream_as_payload_with_the_group_made(
    tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    config = write_config(tmp_path, redis_url)
    with Producer.from_config(config) as producer:
        ids = producer.enqueue_many("ai_processing", [{"id": 1}, {"id": 2, "text": "é"}])
        one = producer.enqueue("ai_processing", {"id": 3})
    assert [i for i, _ in r.xrange("ai_processing")] == [*ids, one]
    payloads = [json.loads(f["payload"]) for _, f in r.xrange("ai_processing")]
    assert payloads == [{"id": 1}, {"id": 2, "text": "é"}, {"id": 3}]
    assert [g["name"] for g in r.xinfo_groups("ai_processing")] == ["workers"]
    assert orchestrator.enqueue("ai_processing", {"id": 4}, config=str(config))
    assert r.xlen("ai_processing") == 4


def test_bad_jobs_and_queues_are_refused_before_anything_is_written(
    tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    with Producer.from_config(write_config(tmp_path, redis_url)) as producer:
        with pytest.raises(KeyError, match="unknown queue 'nope'"):
            producer.enqueue("nope", {"id": 1})
        with pytest.raises(ValueError, match="RQ queue"):
            producer.enqueue("reports", {"id": 1})
        with pytest.raises(TypeError, match="a job is a JSON object"):
            producer.enqueue_many("ai_processing", [{"id": 1}, [2]])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="not JSON serializable"):
            producer.enqueue("ai_processing", {"id": object()})
    assert not r.exists("ai_processing")


def test_wait_replicas_says_when_no_replica_has_the_jobs(
    tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    """The session's Redis has no replica: with ``wait_replicas: 1`` the
    jobs are on the master and the producer says they are on no replica."""
    config = write_config(tmp_path, redis_url, wait_replicas=1, wait_timeout=0.05)
    with (
        Producer.from_config(config) as producer,
        pytest.raises(ReplicationTimeout, match=re.escape("1 job(s) on 0 of 1 replica")),
    ):
        producer.enqueue("ai_processing", {"id": 1})
    assert r.xlen("ai_processing") == 1
