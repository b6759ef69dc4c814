"""Supervising a local server: pid files, process identity, ports, start, health wait, stop.

The servers outlive the command that starts them (`streamrec services up` returns; `down`,
maybe from another process, stops them later), so a server is known by its pid file plus a
check that the pid is still that server (psutil reads its command line and working folder),
never by a handle held in memory. psutil also answers which process holds a port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from streamrec.streaming.config import ServicesConfig
from streamrec_devservices.common import Paths, ServicesError, elapsed, env_var, tails, write_atomic
from streamrec_devservices.report import ServiceState

log = logging.getLogger("streamrec.services")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR as the servers use it: a TIME_WAIT leftover of our own last run is not
    # "taken", while a listener on this port (or on 0.0.0.0) still makes bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """The pid listening on a TCP port (psutil); None when unknown or not allowed to see."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def _describe_holder(port: int) -> str:
    """Who holds a port, in words; names the other streamrec home when it is one of ours."""
    pid = listener_pid(port)
    if pid is None:
        return "another process"
    args = cmdline_of(pid) or []
    props = next((a for a in args if a.endswith("/run/kafka/server.properties")), None)
    cwd = cwd_of(pid)
    other_home = None
    if props:
        other_home = str(Path(props).parent.parent.parent)
    elif cwd is not None and cwd.parts[-3:] == ("run", "redis", "data"):
        other_home = str(cwd.parent.parent.parent)
    if other_home:
        return (
            f"pid {pid}, the streamrec server of another home, {other_home} (home is relative "
            f"to the working directory: run from there or set {env_var('home')}={other_home})"
        )
    return f"pid {pid} ({' '.join(args)[:120] or 'unknown command'})"


# Children started by this process: poll() reaps them, so a stopped server is not mistaken for
# a live one (a zombie still answers kill(pid, 0)) and Popen does not warn at garbage collection.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def alive(pid: int) -> bool:
    """True while the process runs; a zombie whose parent has not reaped it yet is dead."""
    child = CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            CHILDREN.pop(pid, None)
            return False
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def cmdline_of(pid: int) -> list[str] | None:
    """The process's arguments; None when they cannot be read (then a pid file is trusted)."""
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.ZombieProcess:
        return []
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def cwd_of(pid: int) -> Path | None:
    try:
        return Path(psutil.Process(pid).cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Server:
    """What Kafka and Redis have in common: a pid file, an identity check, ports, a health probe."""

    name: str = ""

    def __init__(self, cfg: ServicesConfig, paths: Paths) -> None:
        self.cfg = cfg
        self.paths = paths
        self.dir = paths.run / self.name
        self.pid_file = self.dir / f"{self.name}.pid"
        self.out_file = self.dir / f"{self.name}.out"  # the process's own stdout/stderr
        self.log_file = self.dir / f"{self.name}.log"
        self.spawned_at = 0.0

    # -- per server
    @property
    def port(self) -> int:
        raise NotImplementedError

    def ports(self) -> list[tuple[int, str]]:
        """(port, ServicesConfig field) pairs this server listens on."""
        raise NotImplementedError

    def is_ours(self, pid: int) -> bool:
        raise NotImplementedError

    def probe(self) -> str | None:
        """None when the server answers a real request, else why not."""
        raise NotImplementedError

    def prepare(self) -> tuple[list[str], Path]:
        """Install/download what is missing, write config; return (command, cwd)."""
        raise NotImplementedError

    # -- shared
    def _read_pid(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None

    def running(self) -> tuple[int, dict[str, object]] | None:
        """(pid, pid-file record) of our live server, or None (a stale pid file is ignored)."""
        rec = self._read_pid()
        if rec is None:
            return None
        pid = int(rec["pid"])  # type: ignore[call-overload]
        # A child of this process is ours by construction; asking /proc would race its exec
        # (cmdline reads empty for a moment after Popen returns) and leak a fresh server.
        if alive(pid) and (pid in CHILDREN or self.is_ours(pid)):
            return pid, rec
        return None

    def state(self) -> ServiceState:
        run = self.running()
        if run is None:
            taken = [f"{p} ({env_var(s)})" for p, s in self.ports() if not port_free(p)]
            detail = "stopped" + (
                f"; port {', '.join(taken)} in use by another process" if taken else ""
            )
            return self._state(None, False, detail)
        pid, rec = run
        if rec.get("ports") != [p for p, _ in self.ports()]:
            return self._state(
                pid, False, f"running with other ports {rec.get('ports')}; run `down` first"
            )
        why = self.probe()
        return self._state(pid, why is None, "running" if why is None else f"running; {why}")

    def _state(self, pid: int | None, healthy: bool, detail: str) -> ServiceState:
        return ServiceState(
            name=self.name,
            host="127.0.0.1",
            port=self.port,
            pid=pid,
            healthy=healthy,
            detail=detail,
            log_file=str(self.log_file),
        )

    def check_ports_free(self) -> None:
        for port, setting in self.ports():
            if not port_free(port):
                raise ServicesError(
                    f"{self.name}: port {port} on 127.0.0.1 ({setting}, "
                    f"{env_var(setting)}={port}) is already in use by {_describe_holder(port)}, "
                    f"not by this streamrec home ({self.paths.home}). Stop that process or set "
                    f"{env_var(setting)} to a free port."
                )

    def spawn(self) -> int:
        cmd, cwd = self.prepare()
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.out_file.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: survives the shell and Ctrl-C of the caller
                close_fds=True,
            )
        self.spawned_at = time.monotonic()
        CHILDREN[proc.pid] = proc
        rec = {
            "pid": proc.pid,
            "ports": [p for p, _ in self.ports()],
            "started_at": time.time(),
            "command": cmd,
        }
        write_atomic(self.pid_file, json.dumps(rec))
        log.info("%s: started pid %d (%s)", self.name, proc.pid, cmd[0])
        return proc.pid

    def wait_healthy(self, pid: int, deadline: float, t0: float) -> None:
        why = "not answering yet"
        while True:
            if not alive(pid):
                raise ServicesError(
                    f"{self.name}: process {pid} exited during start-up.\n"
                    f"{tails([self.out_file, self.log_file])}"
                )
            if port_answers(self.port):
                got = self.probe()
                if got is None:
                    log.info(
                        "%s: healthy on 127.0.0.1:%d after %s", self.name, self.port, elapsed(t0)
                    )
                    return
                why = got
            if time.monotonic() >= deadline:
                raise ServicesError(
                    f"{self.name}: not healthy on 127.0.0.1:{self.port} after "
                    f"{self.cfg.start_timeout_s:.0f} s ({env_var('start_timeout_s')}): {why}\n"
                    f"{tails([self.out_file, self.log_file])}"
                )
            time.sleep(0.2)

    def stop(self) -> bool:
        """SIGTERM, wait up to stop_timeout_s, then SIGKILL the group. False if not running."""
        run = self.running()
        if run is None:
            if self.pid_file.exists():
                log.info("%s: removing stale pid file %s", self.name, self.pid_file)
                self.pid_file.unlink(missing_ok=True)
            return False
        pid, _ = run
        t0 = time.monotonic()
        log.info("%s: stopping pid %d (SIGTERM)", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        how = "SIGTERM"
        if not wait_gone(pid, self.cfg.stop_timeout_s):
            how = "SIGKILL"
            log.warning(
                "%s: pid %d still running after %.0f s (%s); SIGKILL",
                self.name,
                pid,
                self.cfg.stop_timeout_s,
                env_var("stop_timeout_s"),
            )
            kill_tree(pid)
            if not wait_gone(pid, 10.0):
                raise ServicesError(f"{self.name}: pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        log.info("%s: stopped pid %d in %s (%s)", self.name, pid, elapsed(t0), how)
        return True


def kill_tree(pid: int) -> None:
    """SIGKILL a server and everything under it: its process group (start_new_session made it
    the leader) and any descendant that left the group (psutil walks the tree)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.kill()


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
