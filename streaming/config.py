"""Settings of the I/O layer: Kafka, Redis and the local development servers.

Plain frozen dataclasses; `streamrec.consumers.config` composes them with the model's into the
one process config read from `STREAMREC_*` environment variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamrec.model.config import ConfigError
from streamrec.streaming.security import (
    KAFKA_PROTOCOLS,
    KAFKA_SASL_MECHANISMS,
    NO_SECRET,
    Secret,
    redis_tls,
    require_file,
    split_url_password,
)


def _require(cond: bool, setting: str, message: str) -> None:
    if not cond:
        raise ConfigError(setting, message)


def _port(value: int, setting: str) -> None:
    _require(1 <= value <= 65535, setting, f"must be a TCP port in 1..65535, got {value}")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "streamrec.events"
    dlq_topic: str = "streamrec.events.dlq"
    items_topic: str = "streamrec.items"
    users_topic: str = "streamrec.users"
    group_id: str = "streamrec-trainer"
    partitions: int = 4
    poll_timeout_ms: int = 200
    max_poll_records: int = 4096
    fetch_max_bytes: int = 64 * 1024 * 1024
    max_partition_fetch_bytes: int = 8 * 1024 * 1024
    request_timeout_ms: int = 30_000
    # A trainer killed without leaving its group holds its partitions until its session
    # expires: 10 s here (kafka-python's default is 45 s) bounds a restart or takeover.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL (kafka-python `security_protocol`)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; SASL_* only
    sasl_username: str = ""  # SASL user; required by SASL_PLAINTEXT and SASL_SSL
    # SASL password (never printed), or `STREAMREC_KAFKA_SASL_PASSWORD_FILE` naming a file with it
    sasl_password: Secret = NO_SECRET
    ssl_cafile: str = ""  # CA bundle (PEM) the broker's certificate must chain to; SSL/SASL_SSL
    ssl_certfile: str = ""  # client certificate (PEM) for mutual TLS; SSL/SASL_SSL
    ssl_keyfile: str = ""  # private key (PEM) of the client certificate; SSL/SASL_SSL
    ssl_check_hostname: bool = True  # the broker's certificate must name the host dialled

    def __post_init__(self) -> None:
        _require(bool(self.bootstrap.strip()), "bootstrap", "must name at least one host:port")
        for part in self.bootstrap.split(","):
            host, sep, port = part.strip().rpartition(":")
            _require(
                bool(sep and host and port.isdigit()),
                "bootstrap",
                f"expected host:port[,host:port...], got {self.bootstrap!r}",
            )
        for name in ("events_topic", "dlq_topic", "items_topic", "users_topic", "group_id"):
            _require(bool(getattr(self, name)), name, "must not be empty")
        _require(1 <= self.partitions <= 10_000, "partitions", "must be in 1..10000")
        # kafka-python returns nothing for timeout 0 (kafka-python #2609): never poll with 0.
        _require(self.poll_timeout_ms >= 1, "poll_timeout_ms", "must be >= 1 (0 returns nothing)")
        _require(self.max_poll_records >= 1, "max_poll_records", "must be >= 1")
        _require(self.fetch_max_bytes >= 1024, "fetch_max_bytes", "must be >= 1024")
        _require(
            self.max_partition_fetch_bytes >= 1024, "max_partition_fetch_bytes", "must be >= 1024"
        )
        _require(self.request_timeout_ms >= 1000, "request_timeout_ms", "must be >= 1000")
        _require(
            self.session_timeout_ms >= 6000,
            "session_timeout_ms",
            "must be >= 6000 (the broker's group.min.session.timeout.ms)",
        )
        _require(
            1 <= self.heartbeat_interval_ms <= self.session_timeout_ms // 3,
            "heartbeat_interval_ms",
            "must be >= 1 and at most a third of session_timeout_ms",
        )
        _check_kafka_security(self)


def _as_secret(section: object, name: str) -> None:
    """A password passed as a plain str (code, `Config.replace`) is wrapped, never kept bare."""
    value = getattr(section, name)
    if not isinstance(value, Secret):
        _require(isinstance(value, str), name, "must be a string")
        object.__setattr__(section, name, Secret(value))


def _check_kafka_security(c: KafkaConfig) -> None:
    """Unknown names, SASL without credentials, and settings the protocol would ignore (a
    password set for a PLAINTEXT listener is a mistake to say, not to drop silently)."""
    _as_secret(c, "sasl_password")
    _require(
        c.security_protocol in KAFKA_PROTOCOLS,
        "security_protocol",
        f"must be one of {', '.join(KAFKA_PROTOCOLS)}, got {c.security_protocol!r}",
    )
    _require(
        c.sasl_mechanism in KAFKA_SASL_MECHANISMS,
        "sasl_mechanism",
        f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, got {c.sasl_mechanism!r}",
    )
    sasl = c.security_protocol.startswith("SASL_")
    tls = c.security_protocol.endswith("SSL")
    for name in ("sasl_username", "sasl_password"):
        if sasl:
            _require(bool(getattr(c, name)), name, f"{c.security_protocol} needs it")
        else:
            _require(
                not getattr(c, name), name, f"set, but {c.security_protocol} does not use SASL"
            )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        _require(
            tls or not getattr(c, name), name, f"set, but {c.security_protocol} does not use TLS"
        )
        require_file(getattr(c, name), name)
    _require(
        not c.ssl_keyfile or bool(c.ssl_certfile),
        "ssl_keyfile",
        "a key needs its certificate (ssl_certfile)",
    )


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "sr:"
    socket_timeout_ms: int = 2000
    connect_timeout_ms: int = 2000
    retries: int = 5
    backoff_base_ms: int = 20
    backoff_cap_ms: int = 2000
    username: str = ""  # ACL user (Redis 6+); empty: the URL's, else `default`
    # password (never printed), or `STREAMREC_REDIS_PASSWORD_FILE` naming a file with it
    password: Secret = NO_SECRET
    ssl: bool = False  # TLS even for a redis:// URL (a rediss:// URL always uses TLS)
    ssl_cafile: str = ""  # CA bundle (PEM) the server's certificate must chain to; TLS only
    ssl_certfile: str = ""  # client certificate (PEM) for mutual TLS; TLS only
    ssl_keyfile: str = ""  # private key (PEM) of the client certificate; TLS only
    ssl_check_hostname: bool = True  # the server's certificate must name the host dialled

    def __post_init__(self) -> None:
        _require(
            self.url.startswith(("redis://", "rediss://", "unix://")),
            "url",
            "must start with redis://, rediss:// or unix://",
        )
        _require(bool(self.prefix), "prefix", "must not be empty")
        _require(self.socket_timeout_ms >= 1, "socket_timeout_ms", "must be >= 1")
        _require(self.connect_timeout_ms >= 1, "connect_timeout_ms", "must be >= 1")
        _require(0 <= self.retries <= 100, "retries", "must be in 0..100")
        _require(self.backoff_base_ms >= 1, "backoff_base_ms", "must be >= 1")
        _require(self.backoff_cap_ms >= self.backoff_base_ms, "backoff_cap_ms", "must be >= base")
        _as_secret(self, "password")
        bare, in_url = split_url_password(self.url)
        if in_url is not None:
            # Kept as a Secret, out of the URL: no repr, asdict or JSON of this config shows it.
            _require(not self.password, "password", "given twice, in url and here: keep one")
            object.__setattr__(self, "url", bare)
            object.__setattr__(self, "password", in_url)
        _require(not (self.ssl and self.url.startswith("unix://")), "ssl", "TLS needs a TCP URL")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            _require(
                redis_tls(self) or not getattr(self, name),
                name,
                "set, but TLS is off (use a rediss:// URL or ssl=true)",
            )
            require_file(getattr(self, name), name)


@dataclass(frozen=True)
class ServicesConfig:
    """Local Kafka and Redis servers the project installs and runs for development and CI."""

    home: str = ".streamrec"  # cache/ (downloads), run/ (data, logs, pids) below it
    # Downloads (Maven repository, Kafka jars); "" means <home>/cache. Separate so that a
    # throwaway home (tests, a second checkout) can share one cache instead of re-downloading.
    cache_dir: str = ""
    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0  # SIGTERM grace before SIGKILL; Kafka's clean shutdown needs ~5 s
    kafka_heap_mb: int = 512
    # When root on Debian/Ubuntu, apt-get install a missing redis-server or maven; else only say.
    auto_install: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.home), "home", "must not be empty")
        _require(bool(self.kafka_version), "kafka_version", "must not be empty")
        # It goes into a generated pom.xml and a cache folder name: a version, nothing else.
        _require(
            re.fullmatch(r"[0-9]+(\.[0-9]+)+([.-][A-Za-z0-9]+)*", self.kafka_version) is not None,
            "kafka_version",
            f"must be a Kafka release such as 4.1.1, got {self.kafka_version!r}",
        )
        _port(self.kafka_port, "kafka_port")
        _port(self.kafka_controller_port, "kafka_controller_port")
        _port(self.redis_port, "redis_port")
        _require(
            len({self.kafka_port, self.kafka_controller_port, self.redis_port}) == 3,
            "kafka_port",
            "kafka_port, kafka_controller_port and redis_port must differ",
        )
        _require(self.start_timeout_s > 0, "start_timeout_s", "must be > 0")
        _require(self.stop_timeout_s > 0, "stop_timeout_s", "must be > 0")
        _require(
            128 <= self.kafka_heap_mb <= 65536,
            "kafka_heap_mb",
            f"must be in 128..65536 (MiB), got {self.kafka_heap_mb}",
        )
