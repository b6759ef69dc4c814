"""The programs the local servers need (Java, Maven, redis-server, kcat, redis-cli): found on
PATH, or apt-installed when running as root on Debian with `auto_install`, else a message
saying how to install them."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from streamrec.streaming.config import ServicesConfig
from streamrec_devservices.common import (
    INSTALL_TIMEOUT_S,
    ServicesError,
    elapsed,
    env_var,
    last_lines,
    run_command,
)

log = logging.getLogger("streamrec.services")


MIN_JAVA = 17


def _apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages without letting their maintainer scripts start system daemons.

    The redis-server package starts a system Redis on 6379 when it is installed, which would
    then hold the port we want. A policy-rc.d that answers 101 ("action forbidden") is the
    Debian way to say "install, don't start"; we only add one when none exists, and remove it.
    """
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServicesError(
            f"{why}: {' '.join(packages)} is not installed and cannot be installed automatically "
            f"(needs root and apt-get). Install it, e.g. `sudo apt-get install -y "
            f"{' '.join(packages)}`."
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    t0 = time.monotonic()
    log.info("apt: installing %s (%s)", " ".join(packages), why)
    try:
        if own_policy:
            policy.write_text("#!/bin/sh\n# streamrec: install, do not start services\nexit 101\n")
            policy.chmod(0o755)
        lock = ["-o", "DPkg::Lock::Timeout=300"]
        steps = [
            ["apt-get", *lock, "update", "-q"],
            ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *packages],
        ]
        for cmd in steps:
            res = run_command(cmd, timeout=INSTALL_TIMEOUT_S, env=env)
            if res.returncode != 0:
                raise ServicesError(
                    f"{why}: `{' '.join(cmd)}` failed with exit code {res.returncode}:\n"
                    f"{last_lines(res.stdout)}"
                )
    except subprocess.TimeoutExpired as e:
        raise ServicesError(f"{why}: `{' '.join(map(str, e.cmd))}` timed out") from None
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    log.info("apt: installed %s in %s", " ".join(packages), elapsed(t0))


def java() -> str:
    """The java binary (JAVA_HOME first, as Kafka's scripts do), checked to be >= 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise ServicesError(
            f"Kafka needs Java {MIN_JAVA} or newer: {where}. Install a JDK/JRE "
            f"(Debian 12: `apt-get install -y openjdk-17-jre-headless`) or set JAVA_HOME."
        )
    try:
        res = run_command([java, "-version"], timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServicesError(f"cannot run `{java} -version`: {e}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', res.stdout)
    if not m:
        raise ServicesError(f"cannot read the Java version from `{java} -version`: {res.stdout!r}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_292" is Java 8
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise ServicesError(
            f"Kafka {MIN_JAVA}+ is required but {java} is Java {major}; install Java {MIN_JAVA}+ "
            f"(Debian 12: `apt-get install -y openjdk-17-jre-headless`) or point JAVA_HOME at it."
        )
    return java


def maven(cfg: ServicesConfig) -> str:
    mvn = shutil.which("mvn")
    if mvn:
        return mvn
    why = "Maven is needed once to download the Kafka broker jars from Maven Central"
    if not cfg.auto_install:
        raise ServicesError(
            f"{why}, and `mvn` is not on PATH. Install Maven 3.6+ (Debian: `apt-get install -y "
            f"maven`) or set {env_var('auto_install')}=true to let streamrec install it as root."
        )
    _apt_install(["maven"], why)
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServicesError(f"{why}: apt-get installed maven but `mvn` is still not on PATH")
    return mvn


def redis_server(cfg: ServicesConfig) -> str:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).exists()), None
    )
    if found:
        return found
    why = "Redis is needed for the local services"
    if not cfg.auto_install:
        raise ServicesError(
            f"{why}, and `redis-server` is not on PATH. Install it (Debian: `apt-get install -y "
            f"redis-server`) or point STREAMREC_REDIS_URL at an existing Redis."
        )
    _apt_install(["redis-server"], why)
    if Path("/run/systemd/system").exists():
        # The package enables a system unit that would take 6379 at the next boot.
        run_command(["systemctl", "disable", "--now", "redis-server"], timeout=60)
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise ServicesError(f"{why}: apt-get installed redis-server but the binary is missing")
    return found


def _ensure_binary(cfg: ServicesConfig, binary: str, package: str, why: str) -> str:
    """A program on PATH, apt-installed from `package` when missing (root, auto_install)."""
    found = shutil.which(binary)
    if found:
        return found
    if not cfg.auto_install:
        raise ServicesError(
            f"{why}, and `{binary}` is not on PATH. Install it (Debian: `apt-get install -y "
            f"{package}`) or set {env_var('auto_install')}=true to let streamrec install it as "
            f"root."
        )
    _apt_install([package], why)
    found = shutil.which(binary)
    if not found:
        raise ServicesError(f"{why}: apt-get installed {package} but `{binary}` is not on PATH")
    return found


def ensure_kcat(cfg: ServicesConfig) -> str:
    """kcat, librdkafka's command-line client: the interop tests publish with it because most
    producers in the wild are librdkafka (confluent-kafka for Python, Go and .NET, rdkafka)."""
    return _ensure_binary(
        cfg, "kcat", "kcat", "kcat is needed to test publishing from a librdkafka client"
    )


def ensure_redis_cli(cfg: ServicesConfig) -> str:
    """redis-cli (Debian's redis-tools, which redis-server depends on): the interop tests read
    the trainer's keys with it as a client that is not redis-py."""
    return _ensure_binary(
        cfg, "redis-cli", "redis-tools", "redis-cli is needed to test reading from Redis"
    )
