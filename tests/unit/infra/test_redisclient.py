"""``REDIS_URL`` names one server or a Redis Cluster (ADR 0014): the URL's parts, and the client
each scheme gives."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.config import load_settings, redact_url
from infra.redisclient import connect, is_cluster, parse_cluster_url


def test_a_cluster_url_lists_its_seed_nodes_and_credentials() -> None:
    parsed = parse_cluster_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001/0")
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert parsed.ssl is True
    assert parsed.username == "app"
    assert parsed.password == "s@cret"


@pytest.mark.parametrize(
    "url",
    [
        "redis://10.0.0.1:6379/0",  # not a cluster URL
        "redis+cluster://10.0.0.1",  # no port
        "redis+cluster://10.0.0.1:7000,:7001",  # no host
        "redis+cluster://10.0.0.1:99999",  # no such port
        "redis+cluster://10.0.0.1:7000/2",  # a cluster has database 0 only
        "redis+cluster://10.0.0.1:7000?timeout=1",  # options are settings
    ],
)
def test_malformed_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_cluster_url(url)


async def test_the_scheme_chooses_the_client() -> None:
    single = connect("redis://127.0.0.1:6379/0", timeout_s=0.25, max_connections=4)
    cluster = connect(
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", timeout_s=0.25, max_connections=4
    )
    try:
        assert isinstance(single, Redis)
        assert not is_cluster(single)
        assert isinstance(cluster, RedisCluster)
        assert is_cluster(cluster)
        assert [n.name for n in cluster.startup_nodes] == ["127.0.0.1:7000", "127.0.0.1:7001"]
    finally:
        await single.aclose()
        await cluster.aclose()


def test_settings_accept_a_cluster_url_and_logs_hide_its_password() -> None:
    url = "redis+cluster://app:hunter2hunter2@10.0.0.1:7000,10.0.0.2:7000"
    settings = load_settings({"REDIS_URL": url})
    assert settings.redis_url == url
    assert settings.redis_cluster_retries == 2
    assert "hunter2" not in redact_url(url)
