"""One Redis client for a single server or a Redis Cluster, chosen by the URL (ADR 0014).

``redis://`` / ``rediss://`` name one server (:class:`redis.asyncio.Redis`);
``redis+cluster://host:port[,host:port...]`` / ``rediss+cluster://...`` name seed nodes of a
Redis Cluster (:class:`redis.asyncio.cluster.RedisCluster`; the client discovers the rest).
Every adapter takes a :data:`RedisClient` and works on both; the few commands whose form differs
in a cluster go through the helpers here:

- :func:`mget`: a cross-slot ``MGET`` is split by slot in a cluster (one pipeline, one command
  per slot, not atomic across slots: the contact cache never needed that);
- :func:`publish`: the dossier invalidation channel is a *sharded* channel in a cluster
  (``SPUBLISH``, served by the master of the channel's slot, which is what a subscriber pinned
  to that master needs to keep the ping ordering of ADR 0010), classic ``PUBLISH`` otherwise;
- :func:`subscriber`: the connection a listener subscribes on (the channel's master in a
  cluster, with :func:`subscribe_command` naming ``SSUBSCRIBE``).

Lua scripts need nothing: every script's keys share one hash slot and redis-py's script object
loads the script on the node that answers ``NOSCRIPT``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_ERRORS",
    "RedisClient",
    "connect",
    "is_cluster",
    "is_cluster_url",
    "mget",
    "parse_cluster_url",
    "prepare",
    "publish",
    "subscriber",
]

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"
"""What every Redis adapter is given: one server or a cluster."""

REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    RedisError,
    RedisClusterException,  # not a RedisError: "cannot be connected", a slot not covered
    OSError,
    TimeoutError,
)
"""The failures every adapter absorbs into its degraded mode (never a 5xx)."""

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")

CLUSTER_RETRY_BASE_S: Final = 0.01
CLUSTER_RETRY_CAP_S: Final = 0.1
"""Backoff between the cluster client's attempts (uniform jitter, doubling from 10 ms to 100 ms).
An attempt that hits a dead master marks the slot map for a refresh; the next attempt asks a
live node. The attempts stay far below a request's budget: a master that stays down costs the
degraded mode, never a stalled request."""


class _ClosedWriteIsConnectionError(AbstractConnection):
    """Report a write to (or a read from) a socket already closed as ``ConnectionError``.

    Under uvloop, writing to a transport that Redis (or the network) reset raises
    ``RuntimeError: unable to perform operation on <TCPTransport closed=True ...>``, which
    redis-py lets through after dropping the connection; every adapter's ``except RedisError``
    would miss it and the request would answer 500 (tests/chaos/test_stateful.py). In a cluster,
    a slot-map refresh (a failover) closes the connections of the nodes it replaces, including
    one another task is using: redis-py then fails with ``AttributeError`` on the dropped stream.
    As a ``ConnectionError`` the client's retry reconnects, or the adapters degrade as designed.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except (RuntimeError, AttributeError) as exc:
            if isinstance(exc, AttributeError) and self.is_connected:
                raise
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except AttributeError as exc:
            if self.is_connected:
                raise
            raise RedisConnectionError(f"Error while reading from socket: {exc}") from exc


class _TcpConnection(_ClosedWriteIsConnectionError, Connection):
    """``redis://``."""


class _SslConnection(_ClosedWriteIsConnectionError, SSLConnection):
    """``rediss://``."""


_CONNECTION_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _SslConnection,
}


def is_cluster_url(url: str) -> bool:
    """``True`` for ``redis+cluster://`` and ``rediss+cluster://``."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster(client: RedisClient) -> bool:
    """``True`` when ``client`` speaks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """The parts of a ``redis+cluster://`` URL."""

    nodes: tuple[tuple[str, int], ...]
    ssl: bool
    username: str | None
    password: str | None


def parse_cluster_url(url: str) -> ClusterUrl:
    """Split ``redis+cluster://[user:pass@]host:port[,host:port...][/0]`` into seed nodes.

    Raises:
        ValueError: Not a cluster URL, no node, a node without a valid port, a database other
            than 0, or a query string (cluster options are settings, not URL parameters).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError("not a redis+cluster:// URL")
    if urlsplit(url).query:
        raise ValueError("a cluster URL takes no query string")
    rest = rest.split("?", 1)[0]
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("every cluster node needs host:port")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterUrl(tuple(nodes), scheme.lower() == "rediss+cluster", username, password)


def connect(
    url: str,
    *,
    timeout_s: float,
    max_connections: int,
    health_check_interval: float = 30,
    cluster_retries: int = 2,
) -> RedisClient:
    """The client for ``url``: a single server, or a cluster for ``redis+cluster://``.

    Commands are bounded by ``timeout_s`` (connect and read). In a cluster, ``max_connections``
    bounds each node's pool, and a failed command is tried ``cluster_retries`` more times with
    a short jittered backoff (:data:`CLUSTER_RETRY_BASE_S`), each retry after a connection
    error or ``MOVED`` on a refreshed slot map (a promoted replica).
    """
    if not is_cluster_url(url):
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
        )
        # The URL's scheme picked the class (from_url overrides a connection_class argument).
        pool = client.connection_pool
        pool.connection_class = _CONNECTION_CLASSES.get(
            pool.connection_class, pool.connection_class
        )
        return client
    parsed = parse_cluster_url(url)
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max_connections,
        health_check_interval=health_check_interval,
        # A slot whose master is down fails alone; the other slots keep serving.
        require_full_coverage=False,
        retry=Retry(
            ExponentialWithJitterBackoff(base=CLUSTER_RETRY_BASE_S, cap=CLUSTER_RETRY_CAP_S),
            retries=cluster_retries,
        ),
    )
    # Every node (the seeds and those discovered later) connects with the wrapped class.
    kwargs: dict[str, Any] = cluster.connection_kwargs
    wrapped = _CONNECTION_CLASSES.get(kwargs["connection_class"], kwargs["connection_class"])
    kwargs["connection_class"] = wrapped
    for node in cluster.startup_nodes:
        node.connection_class = wrapped
    return cluster


async def prepare(client: RedisClient) -> None:
    """Learn a cluster's slot map now, before traffic (best effort: the client retries on first
    use); nothing for one server, which connects on first use."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(*REDIS_ERRORS):
            await client.initialize()


async def mget(client: RedisClient, names: Sequence[str]) -> list[Any]:
    """``MGET`` of ``names``, split by slot in a cluster (values in the order of ``names``)."""
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(names)))
    return list(await client.mget(list(names)))


def publish(pipe: Any, channel: str, message: bytes, *, cluster: bool) -> None:
    """Queue a publication of ``message`` on ``channel`` in ``pipe`` (sharded in a cluster)."""
    if cluster:
        pipe.spublish(channel, message)
    else:
        pipe.publish(channel, message)


async def subscriber(client: RedisClient, channel: str, *, refresh: bool) -> aioredis.Redis:
    """A client for a listener of ``channel``: ``client`` itself, or in a cluster a new client
    of the master that serves the channel's slot now (the caller closes it).

    In a cluster, with ``refresh`` (a listener that lost its connection: maybe its master to a
    failover) the slot map is read again first, so the promoted replica is found.
    """
    if not isinstance(client, RedisCluster):
        return client
    if refresh or not client.nodes_manager.slots_cache:
        await client.nodes_manager.initialize()
    node = client.nodes_manager.get_node_from_slot(client.keyslot(channel))  # the primary
    kwargs = dict(node.connection_kwargs)
    kwargs.pop("max_connections", None)
    pool = aioredis.ConnectionPool(
        connection_class=node.connection_class, max_connections=2, **kwargs
    )
    return aioredis.Redis(connection_pool=pool)


def subscribe_command(client: RedisClient) -> tuple[str, str]:
    """The subscribe method and the message type of a listener: sharded in a cluster."""
    if isinstance(client, RedisCluster):
        return "ssubscribe", "smessage"
    return "subscribe", "message"
