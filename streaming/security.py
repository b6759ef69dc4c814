"""Credentials and TLS for Kafka and Redis: secrets that never print, and denials that stop.

A password is a `Secret`: its repr, str and format are `***`, so a config dump, a log line or
an exception message that includes it shows nothing; `.reveal()` is the one way to the text,
used only where a client is built. `*_FILE` variables (as container images mount secrets)
are read by `read_secret_file`. The Kafka client parameters come from one builder,
`kafka_params`, used by every producer, consumer and admin client so they cannot drift.

A wrong password, an unknown user, a missing ACL or a bad certificate is not an outage:
waiting does not fix it. `denial()` turns kafka-python's and redis-py's errors of that kind
into one `AccessDenied(system, principal, right)` that the commands report as one line and
exit on, instead of retrying.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from streamrec.model.config import ConfigError

if TYPE_CHECKING:
    from streamrec.streaming.config import KafkaConfig, RedisConfig

MASK = "***"
KAFKA_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
FILE_SUFFIX = "_FILE"
EXIT_ACCESS_DENIED = 5  # the exit code of a command stopped by an AccessDenied
# kafka-python retries a denied bootstrap (wrong password, bad certificate) like a down broker
# until `bootstrap_timeout_ms` (30 s by default): with SASL or TLS on, it is capped to this,
# so that a denial is reported within 15 s.
SECURED_BOOTSTRAP_TIMEOUT_MS = 10_000


class Secret:
    """A string that prints as `***` (empty: as nothing) everywhere but `.reveal()`.

    Not a str subclass on purpose: json/orjson would serialize a subclass's real text, and
    `"%s" % s` or `"".join` would too. Equality compares the texts (configs round-trip).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret needs a str, got {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        return str(object.__getattribute__(self, "_value"))

    def __bool__(self) -> bool:
        return bool(self.reveal())

    def __str__(self) -> str:
        return MASK if self.reveal() else ""

    def __repr__(self) -> str:
        return repr(str(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.reveal().encode(), other.reveal().encode())

    def __hash__(self) -> int:
        return hash((Secret, self.reveal()))

    def __reduce__(self) -> tuple[Any, ...]:  # pickling (process pools) keeps the value
        return (Secret, (self.reveal(),))


NO_SECRET = Secret()  # the default of every password setting


def read_secret_file(variable: str, path: str) -> Secret:
    """The contents of `path` (a `*_FILE` variable's value), one trailing newline stripped."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise ConfigError(variable, f"cannot read the secret file {path!r}: {reason}") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    return Secret(text)


def require_file(path: str, setting: str) -> None:
    """A certificate/key setting names a readable file (checked at start, not at connect)."""
    if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise ConfigError(setting, f"no readable file at {path!r}")


# --------------------------------------------------------------------------- URLs


def url_password(url: str) -> str | None:
    """The password a redis URL carries (user:pass@host or ?password=), if any."""
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None


def url_username(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.username:
        return parts.username
    return next((v for k, v in parse_qsl(parts.query) if k == "username" and v), None)


def split_url_password(url: str) -> tuple[str, Secret | None]:
    """(`url` without its password, the password) - a config keeps the two apart so that no
    dump of it (repr, asdict, JSON) can show the password."""
    if url_password(url) is None:
        return url, None
    parts = urlsplit(url)
    netloc, password = parts.netloc, parts.password
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in pairs:
        if key == "password" and value:
            password = value
    query = urlencode([(k, v) for k, v in pairs if k != "password"])
    bare = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return bare, Secret(unquote(password or ""))


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`: what may be logged or printed."""
    if url_password(url) is None:
        return url  # unchanged, byte for byte (urlunsplit would rewrite unix:///x as unix:/x)
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# --------------------------------------------------------------------------- client params


def kafka_params(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection and security parameters of every kafka-python client (producer, consumer,
    admin): the one place they are built."""
    params: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap.split(","),
        "security_protocol": cfg.security_protocol,
    }
    if cfg.security_protocol.startswith("SASL_"):
        params["sasl_mechanism"] = cfg.sasl_mechanism
        params["sasl_plain_username"] = cfg.sasl_username
        params["sasl_plain_password"] = cfg.sasl_password.reveal()
    if cfg.security_protocol.endswith("SSL"):
        params["ssl_check_hostname"] = cfg.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(cfg, name):
                params[name] = getattr(cfg, name)
    return params


# kafka-python's loggers that print requests and raw bytes at DEBUG: with SASL PLAIN those hold
# the password in the clear (SaslAuthenticateRequest auth_bytes, the bytes sent).
_KAFKA_WIRE_LOGGERS = (
    "kafka.protocol.parser",
    "kafka.net.connection",
    "kafka.net.transport",
    "kafka.net.manager",
    "kafka.net.sasl.plain",
    "kafka.net.sasl.scram",
)


class _RedactSecrets(logging.Filter):
    """Replaces the passwords of the Kafka clients built in this process by `***` in
    kafka-python's own log records (which are only formatted when their level is on)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: set[str] = set()

    def add(self, secret: Secret) -> None:
        text = secret.reveal()
        if text:
            self.texts.add(text)
            self.texts.add(repr(text.encode())[2:-1])  # as it shows inside b'...'

    def filter(self, record: logging.LogRecord) -> bool:
        if self.texts:
            message = record.getMessage()
            hits = [t for t in self.texts if t in message]
            if hits:
                for text in sorted(hits, key=len, reverse=True):
                    message = message.replace(text, MASK)
                record.msg, record.args = message, ()
        return True


_REDACT = _RedactSecrets()
for _name in _KAFKA_WIRE_LOGGERS:
    logging.getLogger(_name).addFilter(_REDACT)


class _BootstrapFailures(logging.Filter):
    """Collects kafka-python's "Bootstrap connection to ... failed: <reason>" warnings while a
    client is built: the only place its bootstrap loop says why it keeps retrying. (Its I/O
    thread logs them; a client built at the same time in another thread may add its own.)"""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Bootstrap connection"):
            self.reasons.append(record.getMessage())
        return True


def kafka_client(cls: Any, cfg: KafkaConfig, params: dict[str, Any]) -> Any:
    """`cls(**params)` (a kafka-python producer, consumer or admin client) whose denied
    bootstrap raises AccessDenied within SECURED_BOOTSTRAP_TIMEOUT_MS instead of a bare
    "Unable to bootstrap" after 30 s.

    kafka-python (3.0.12) does not stop on a failed SASL authentication while bootstrapping:
    it reconnects until the timeout. A broker with `connection.failed.authentication.delay.ms`
    (100 ms by default) even closes the connection without an error response. So the reasons
    of the failed attempts are what tells a denial from a broker that is down.
    """
    import kafka.errors as ke

    secured = cfg.security_protocol != "PLAINTEXT"
    _REDACT.add(cfg.sasl_password)
    if secured:
        given = params.get("bootstrap_timeout_ms", 30_000)
        params["bootstrap_timeout_ms"] = min(given, SECURED_BOOTSTRAP_TIMEOUT_MS)
    watch = _BootstrapFailures()
    manager_log = logging.getLogger("kafka.net.manager")
    manager_log.addFilter(watch)
    try:
        return cls(**params)
    except Exception as e:
        found = denial(e, kafka=cfg)
        if found is None and secured and isinstance(e, ke.KafkaTimeoutError):
            found = _bootstrap_denial(watch.reasons, cfg)
        if found is None:
            raise
        raise found from None
    finally:
        manager_log.removeFilter(watch)


def _bootstrap_denial(reasons: list[str], cfg: KafkaConfig) -> AccessDenied | None:
    """What the failed bootstrap attempts amount to, when they are denials."""
    principal = kafka_principal(cfg)
    for reason in reasons:
        if "SaslAuthenticationFailedError" in reason:
            why = reason.partition("SaslAuthenticationFailedError: ")[2].rpartition(" (backoff")[0]
            return AccessDenied(
                "kafka", principal, f"authentication failed (wrong password or unknown user): {why}"
            )
        if any(m in reason for m in _TLS_MARKERS):
            return AccessDenied("kafka", principal, f"TLS handshake failed: {reason}")
        if "UnsupportedSaslMechanismError" in reason:
            return AccessDenied(
                "kafka", principal, f"SASL mechanism {cfg.sasl_mechanism} not enabled on the broker"
            )
    dropped = [r for r in reasons if "socket disconnected" in r]
    if cfg.security_protocol.startswith("SASL_") and dropped and len(dropped) == len(reasons):
        return AccessDenied(
            "kafka",
            principal,
            f"authentication failed: the broker closed all {len(dropped)} connections during "
            f"SASL {cfg.sasl_mechanism} authentication (wrong password or unknown user, or a "
            "listener that is not SASL)",
        )
    return None


def redis_tls(cfg: RedisConfig) -> bool:
    return cfg.ssl or cfg.url.startswith("rediss://")


def redis_params(cfg: RedisConfig) -> tuple[str, dict[str, Any]]:
    """(url, keyword arguments) for `redis.Redis.from_url`: credentials and TLS files.

    `ssl=true` turns a redis:// URL into rediss:// (redis-py picks its TLS connection class
    from the scheme). A password given in the URL is in `cfg.password` by now (RedisConfig
    takes it out of the URL).
    """
    url = cfg.url
    kwargs: dict[str, Any] = {}
    if cfg.ssl and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    if cfg.username:
        kwargs["username"] = cfg.username
    if cfg.password:
        kwargs["password"] = cfg.password.reveal()
    if redis_tls(cfg):
        kwargs["ssl_check_hostname"] = cfg.ssl_check_hostname
        for ours, theirs in (
            ("ssl_cafile", "ssl_ca_certs"),
            ("ssl_certfile", "ssl_certfile"),
            ("ssl_keyfile", "ssl_keyfile"),
        ):
            if getattr(cfg, ours):
                kwargs[theirs] = getattr(cfg, ours)
    return url, kwargs


# --------------------------------------------------------------------------- denials


class AccessDenied(RuntimeError):
    """`system` refused `principal` for `right`: a configuration problem, never retried."""

    retriable = False

    def __init__(self, system: str, principal: str, right: str) -> None:
        super().__init__(f"{system} denied access to {principal!r}: {right}")
        self.system = system
        self.principal = principal
        self.right = right


def kafka_principal(cfg: KafkaConfig) -> str:
    return client_principal(kafka_params(cfg))


def client_principal(params: Mapping[str, Any]) -> str:
    """Who a kafka-python client (its config or `kafka_params`) authenticates as."""
    protocol = params.get("security_protocol") or "PLAINTEXT"
    if protocol.startswith("SASL_"):
        return f"User:{params.get('sasl_plain_username')}"
    if protocol == "SSL" and params.get("ssl_certfile"):
        return f"the certificate in {params['ssl_certfile']}"
    return "User:ANONYMOUS"


def redis_principal(cfg: RedisConfig) -> str:
    return cfg.username or url_username(cfg.url) or "default"


def _chain(err: BaseException) -> Iterator[BaseException]:
    """`err` and what it was raised from or during, outermost first."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


_TLS_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "SSL:", "TLSV1_ALERT")


def _kafka_denial(err: BaseException, cfg: KafkaConfig | None) -> AccessDenied | None:
    import kafka.errors as ke

    principal = kafka_principal(cfg) if cfg is not None else "the configured principal"
    if isinstance(err, ke.SaslAuthenticationFailedError):
        return AccessDenied(
            "kafka", principal, f"authentication failed (wrong password or unknown user): {err}"
        )
    if isinstance(err, ke.UnsupportedSaslMechanismError):
        return AccessDenied("kafka", principal, f"SASL mechanism not enabled: {err}")
    if isinstance(err, ke.AuthorizationError):
        what = {
            ke.TopicAuthorizationFailedError: "topic",
            ke.GroupAuthorizationFailedError: "consumer group",
            ke.ClusterAuthorizationFailedError: "cluster operation",
            ke.TransactionalIdAuthorizationFailedError: "transactional id",
        }.get(type(err), "resource")
        names = ", ".join(sorted(str(a) for arg in err.args for a in _flatten(arg)))
        return AccessDenied(
            "kafka",
            principal,
            f"no ACL allowing access to {what} {names or '(unnamed)'} ({type(err).__name__})",
        )
    if isinstance(err, ke.KafkaError) and any(m in str(err) for m in _TLS_MARKERS):
        return AccessDenied("kafka", principal, f"TLS handshake failed: {err}")
    return None


def _flatten(arg: Any) -> list[Any]:
    if isinstance(arg, (set, frozenset, list, tuple)):
        return list(arg)
    return [arg]


def _redis_denial(err: BaseException, cfg: RedisConfig | None) -> AccessDenied | None:
    import redis.exceptions as rx

    if not isinstance(err, rx.RedisError):
        return None
    principal = redis_principal(cfg) if cfg is not None else "the configured user"
    kind = getattr(err, "error_type", None)
    if isinstance(err, rx.AuthenticationError):
        return AccessDenied(
            "redis", principal, f"authentication failed (wrong password or unknown user): {err}"
        )
    if isinstance(err, rx.NoPermissionError) or str(err).startswith("NOPERM"):
        return AccessDenied("redis", principal, f"missing ACL right: {err}")
    if isinstance(err, rx.AuthorizationError) or str(err).startswith("NOAUTH"):
        return AccessDenied("redis", principal, f"not authenticated: {err}")
    if kind is rx.ExceptionType.TLS or any(m in str(err) for m in _TLS_MARKERS):
        return AccessDenied("redis", principal, f"TLS handshake failed: {err}")
    return None


def denial(
    err: BaseException, kafka: KafkaConfig | None = None, redis: RedisConfig | None = None
) -> AccessDenied | None:
    """The AccessDenied that `err` (or what it was raised from) amounts to, or None when it is
    something else (an outage, a bug). The configs name the principal."""
    for e in _chain(err):
        if isinstance(e, AccessDenied):
            return e
        found = _kafka_denial(e, kafka) or _redis_denial(e, redis)
        if found is not None:
            return found
    return None


def is_denial(err: BaseException) -> bool:
    """For redis-py's Retry: never retry what a retry cannot fix."""
    return denial(err) is not None
