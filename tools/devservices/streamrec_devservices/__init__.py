"""Local Kafka broker and Redis server for development and tests, with no Docker needed.

Development tooling only: this package is not part of the `streamrec` runtime wheel. A source
checkout installs it beside streamrec (`make install`), and `streamrec services ...` and the
demo find it through the `streamrec.plugins` entry point; the runtime never imports it.

Why this exists: the project needs a real broker and a real Redis to test the data path, and the
machines it runs on (CI runners, laptops, sandboxes) often have Java but no Docker engine. So
the broker jars come from Maven Central through Maven (a plain `mvn` and a generated pom, no
tarball mirror to trust), and Redis is Debian's `redis-server`.

Layout under `ServicesConfig.home` (default `.streamrec`, git-ignored):

    cache/m2/                      Maven's local repository (maven.repo.local)
    cache/kafka-<ver>/libs/*.jar   class path of the broker and of Kafka's command-line tools
                                   (`kafka_tool_command`); `.complete` is written last, so a
                                   download that died half way is redone, never trusted
    run/kafka/                     server.properties, log4j2.properties, data/, kafka.log,
                                   kafka.out (JVM stdout/stderr), kafka.pid
    run/redis/                     redis.conf, data/ (AOF), redis.log, redis.out, redis.pid

Every call is idempotent: a server that is already running (pid file, process identity and a
real answer on its port) is reused, and a port held by anything else fails fast, naming the
setting to change. A server that does not become healthy within `start_timeout_s` is killed;
`up` never leaves a half-started server behind.

Modules, one job each: common (names, errors, paths, locks), prereqs (Java, Maven, Debian
programs), artifacts (the Kafka jars), supervise (pid files, ports, start, health, stop),
kafka_server, redis_server, api (up/down/status), report (their result), cli (the command).
No TensorFlow import here: `streamrec services up` must be fast and work without it.
"""

from __future__ import annotations

from streamrec_devservices.api import down, status, up
from streamrec_devservices.artifacts import ensure_kafka_jars, kafka_pom, kafka_tool_command
from streamrec_devservices.cli import services_command
from streamrec_devservices.common import KAFKA, REDIS, SERVICES, ServicesError, cache_dir, env_var
from streamrec_devservices.kafka_server import kafka_probe
from streamrec_devservices.prereqs import ensure_kcat, ensure_redis_cli
from streamrec_devservices.redis_server import REDIS_SETTINGS, redis_arguments
from streamrec_devservices.report import ServicesStatus, ServiceState

__all__ = [
    "KAFKA",
    "REDIS",
    "REDIS_SETTINGS",
    "SERVICES",
    "ServiceState",
    "ServicesError",
    "ServicesStatus",
    "cache_dir",
    "down",
    "ensure_kafka_jars",
    "ensure_kcat",
    "ensure_redis_cli",
    "env_var",
    "kafka_pom",
    "kafka_probe",
    "kafka_tool_command",
    "redis_arguments",
    "services_command",
    "status",
    "up",
]
