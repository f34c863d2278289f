#!/usr/bin/env python3
"""Fault tests of Beehive's delivery promise (issue 5, item 3).

Starts PRIVATE PostgreSQL, Redis and RabbitMQ servers (own data directories and
ports, so restarting them disturbs nothing else on the machine), runs Beehive as
separate processes against them (two gateways, the message service alone, the file
service alone, and auth/user/social/presence together). First (fault `file-kill`,
issue 11 item 6; see files.py) it kills the file service with SIGKILL between two tus
PATCHes and in the middle of one, and checks that the upload resumes from the stored
offset, the bytes round-trip exactly, nothing is visible before completion and the
sweeper reclaims the killed write's leftovers; then a short `beehive-bench files` run
(the CI smoke of the file benchmark). Then it drives `beehive-bench fault` through them:
senders resend unacknowledged messages with the same client_msg_id, recipients with
two devices each reconnect and sync. While it runs, this script

  * kills a gateway with SIGKILL and starts it again,
  * rolls both gateways (SIGTERM: each drains its sockets over its drain window,
    telling clients to `reconnect` elsewhere, exits, and is started again),
  * restarts the message service (SIGTERM) and kills it (SIGKILL) and starts it again,
  * restarts RabbitMQ,
  * restarts Redis,
  * restarts PostgreSQL (immediate shutdown: crash recovery),

and then lets the bench verify, after recovery and a final sync, that every message
acknowledged to its sender reached every recipient device exactly once and in seq
order. The bench prints the counts and exits non-zero on any violation; so does
this script, and also when a Beehive process exited on its own.

Usage: run.py --bin target/debug/beehive --bench target/debug/beehive-bench [--long]
(scripts/fault-test.sh builds the binaries and calls this).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import files as file_fault

ROOT = Path(__file__).resolve().parents[2]


def log(text: str) -> None:
    print(f"[fault {time.strftime('%H:%M:%S')}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not reached within {timeout:.0f} s")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: initdb and pg_ctl run as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        found = shutil.which("initdb")
        if not found:
            raise RuntimeError("no PostgreSQL binaries (initdb) found; run scripts/infra.sh first")
        return Path(found).parent
    return versions[-1].parent


class Postgres:
    def __init__(self, base: Path):
        self.port = free_port()
        self.bin = pg_bin()
        self.data = base / "pg" / "data"
        self.run_dir = base / "pg" / "run"
        for d in (self.data, self.run_dir):
            d.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(base / "pg", "postgres")
            shutil.chown(self.data, "postgres")
            shutil.chown(self.run_dir, "postgres")
        self.log = self.run_dir / "postgres.log"
        run(as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--no-sync"]), stdout=subprocess.DEVNULL)

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.run_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run(as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                         "-o", opts, "-w", "-t", "60", *args]), stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        # Immediate: no shutdown checkpoint, so start-up runs crash recovery, like a
        # power cut; acknowledged (committed, fsynced) messages must survive it.
        self._ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/beehive_fault"


class Redis:
    def __init__(self, base: Path):
        self.port = free_port()
        self.dir = base / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # No persistence: presence rebuilds from heartbeats, revocations come from
        # PostgreSQL, rate-limit windows may reset.
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("redis up", lambda: port_open(self.port), 20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class RabbitMQ:
    def __init__(self, base: Path, tag: str):
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"beehive-fault-{tag}@localhost"
        self.dir = base / "rabbitmq"
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        libexec = Path("/usr/lib/rabbitmq/bin")
        # As root, the Debian wrappers in /usr/sbin switch to the rabbitmq user (and its
        # HOME and cookie); the real scripts run this private node as root with its own
        # HOME and Erlang cookie instead.
        self.server = str(libexec / "rabbitmq-server") if (libexec / "rabbitmq-server").exists() else "rabbitmq-server"
        self.ctl = str(libexec / "rabbitmqctl") if (libexec / "rabbitmqctl").exists() else "rabbitmqctl"
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(self.dir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            # Keep the machine's configuration out of the private node.
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        })

    def start(self) -> None:
        run([self.server, "-detached"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("rabbitmq port", lambda: port_open(self.port), 120)
        run([self.ctl, "-n", self.node, "await_startup"], env=self.env, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run([self.ctl, "-n", self.node, "stop"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("rabbitmq down", lambda: not port_open(self.port), 60)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"


COMPONENTS = ["auth", "user", "social", "message", "presence", "file"]


class Beehive:
    """One `beehive serve ...` process, restartable with the same ports."""

    def __init__(self, name: str, binary: str, components: str, env: dict, logs: Path):
        self.name = name
        self.binary = binary
        self.components = components
        self.env = dict(env)
        self.admin_port = free_port()
        self.env["BEEHIVE_ADMIN_ADDR"] = f"127.0.0.1:{self.admin_port}"
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.expected_exit = False
        self.unexpected_exits: list[int] = []

    def start(self) -> None:
        self.expected_exit = False
        log_file = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary, "serve", self.components], env=self.env,
                                     stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        def check() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            return self.ready()
        wait_until(f"{self.name} ready", check, timeout)

    def signal(self, sig: int) -> None:
        self.expected_exit = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check_alive(self) -> None:
        """Like a kubelet: a process that exited on its own is noted and restarted."""
        if self.proc and self.proc.poll() is not None and not self.expected_exit:
            code = self.proc.returncode
            self.unexpected_exits.append(code)
            log(f"!! {self.name} exited on its own with {code}; restarting it (see {self.log_path})")
            self.start()


def beehive_env(pg: Postgres, redis: Redis, rmq: RabbitMQ, ports: dict) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BEEHIVE_DATABASE_URL": pg.url,
        "BEEHIVE_REDIS_URL": redis.url,
        "BEEHIVE_AMQP_URL": rmq.url,
        "BEEHIVE_INSTALLATION": "fault",
        "BEEHIVE_RATE_LIMITS": "off",
        "BEEHIVE_ACCESS_TOKEN_TTL": "12h",
        "BEEHIVE_LOG_FORMAT": "json",
        "BEEHIVE_DATABASE_MAX_CONNECTIONS": "8",
        "BEEHIVE_GRPC_TIMEOUT": "5s",
    }
    for c in COMPONENTS:
        env[f"BEEHIVE_{c.upper()}_LISTEN"] = f"127.0.0.1:{ports[c]}"
        env[f"BEEHIVE_{c.upper()}_ADDR"] = f"http://127.0.0.1:{ports[c]}"
    return env


def run_files(args, gw: Beehive, files: Beehive, storage: Path, pg: Postgres, logs: Path, results: dict) -> None:
    """Fault `file-kill` (files.py), then the file benchmark's smoke run through the
    same gateway, sampling the gateway's and the file service's RSS."""
    started = time.monotonic()
    log("fault: kill -9 the file service between tus PATCHes and in the middle of one")
    psql = file_fault.Psql(pg.bin / "psql", pg.port, "beehive_fault")
    figures = file_fault.run(gw.http, files, storage, psql, log)  # type: ignore[attr-defined]
    took = time.monotonic() - started
    (logs / "file-kill.json").write_text(json.dumps(figures, indent=2))
    results.setdefault("faults", []).append({"fault": "file-kill", "seconds": round(took, 1)})
    between, mid = figures["between_patches"], figures["mid_patch"]
    results.setdefault("lines", []).extend([
        f"  file-kill: {figures['bytes']} bytes in {figures['chunk']}-byte PATCHes, sha256 {figures['sha256'][:16]}..",
        f"    killed between PATCHes at offset {between['offset_at_kill']} (PATCH while down: "
        f"{between['patch_while_down']}); resumed from {between['resumed_from']}",
        f"    killed mid-PATCH at offset {mid['offset_at_kill']}: {mid['body_bytes_sent']} of {mid['body_length']} "
        f"body bytes sent, {mid['bytes_on_file_disk_at_kill']} on the file service's disk; client saw "
        f"{mid['client_saw']}; resumed from {mid['resumed_from']}",
        f"    client retries {figures['retries']}; download equal to the bytes sent: {figures['download_equal']}; "
        f"after the sweep: {len(figures['swept']['objects_left'])} object (the blob), 0 tmp files, 0 garbage rows",
    ])
    log(f"fault: file-kill: passed in {took:.1f} s ({figures['retries']} client retries)")

    log("files benchmark smoke: 8 MiB up and down, then 8 parallel uploads of 1 and 3 MiB")
    with open(logs / "files-bench.json", "w") as out, open(logs / "files-bench.log", "w") as err:
        code = subprocess.run(
            [args.bench, "files", "--url", f"http://127.0.0.1:{gw.http}",  # type: ignore[attr-defined]
             "--size", "8MiB", "--chunk", "1MiB", "--range", "1MiB", "--parallel", "8",
             "--rss-sizes", "1MiB,3MiB", "--copy-dir", str(storage),
             "--pid", str(gw.proc.pid if gw.proc else 0), "--file-pid", str(files.proc.pid if files.proc else 0)],
            stdout=out, stderr=err, timeout=300).returncode
    summary = (logs / "files-bench.log").read_text()
    sys.stderr.write(summary)
    if code != 0:
        raise file_fault.FileFaultError(f"beehive-bench files exited with {code}: {summary[-2000:]}")
    for line in summary.strip().splitlines():
        results["lines"].append(f"  files bench smoke: {line}")


# Fault names for --faults, in the order a round runs them (under the chat load).
CHAT_FAULTS = ["gateway-kill", "rolling-restart", "message-term", "message-kill", "rabbitmq", "redis", "postgres"]
# Run once before the chat load: the file service killed mid-upload, then the file
# benchmark's smoke run.
FILE_FAULTS = ["file-kill"]
FAULTS = FILE_FAULTS + CHAT_FAULTS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the beehive binary")
    ap.add_argument("--bench", required=True, help="the beehive-bench binary")
    ap.add_argument("--long", action="store_true", help="longer load, every fault three times")
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--group", type=int, default=None, help="members of the extra group (0: none)")
    ap.add_argument("--rate", type=float, default=None, help="messages/s per sender")
    ap.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    ap.add_argument("--drain-window", default="5s", help="the gateways' BEEHIVE_GATEWAY_DRAIN_WINDOW")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"comma-separated subset of: {', '.join(FAULTS)}")
    args = ap.parse_args()
    chosen = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown or not chosen:
        ap.error(f"unknown or no faults {unknown}; choose from {', '.join(FAULTS)}")

    pairs = args.pairs or (50 if args.long else 20)
    group = args.group if args.group is not None else (30 if args.long else 10)
    rate = args.rate or 10.0
    rounds = 3 if args.long else 1
    gap = 10.0 if args.long else 6.0

    base = Path(tempfile.mkdtemp(prefix="beehive-fault-"))
    os.chmod(base, 0o755)
    logs = base / "logs"
    logs.mkdir()
    tag = base.name.split("-")[-1].lower()
    log(f"working directory {base}")
    pg, redis, rmq = Postgres(base), Redis(base), RabbitMQ(base, tag)
    processes: list[Beehive] = []
    bench = None
    ok = False
    try:
        log(f"starting private PostgreSQL :{pg.port}, Redis :{redis.port}, RabbitMQ :{rmq.port}")
        pg.start()
        redis.start()
        rmq.start()
        ports = {c: free_port() for c in COMPONENTS}
        env = beehive_env(pg, redis, rmq, ports)
        run([args.bin, "migrate"], env=env, stdout=open(logs / "migrate.log", "w"), stderr=subprocess.STDOUT)
        core = Beehive("core", args.bin, "auth,user,social,presence", env, logs)
        message = Beehive("message", args.bin, "message", env, logs)
        gateways = []
        for name in ("gw-a", "gw-b"):
            gw_env = dict(env)
            http = free_port()
            gw_env["BEEHIVE_HTTP_ADDR"] = f"127.0.0.1:{http}"
            gw_env["BEEHIVE_INSTANCE_ID"] = f"fault-{name}"
            gw_env["BEEHIVE_GATEWAY_DRAIN_WINDOW"] = args.drain_window
            gw = Beehive(name, args.bin, "gateway", gw_env, logs)
            gw.http = http  # type: ignore[attr-defined]
            gateways.append(gw)
        file_env = dict(env)
        file_storage = base / "files"
        file_env["BEEHIVE_FILE_STORAGE_DIR"] = str(file_storage)
        # The sweeper runs every grace/4 (at least 0.5 s): the file-kill fault waits for it.
        file_env["BEEHIVE_FILE_GC_GRACE"] = "2s"
        files = Beehive("file", args.bin, "file", file_env, logs)
        processes = [core, message, files, *gateways]
        for p in processes:
            p.start()
        for p in processes:
            p.wait_ready()
        log("beehive up: " + ", ".join(f"{p.name} (admin :{p.admin_port})" for p in processes))

        results: dict = {}
        if "file-kill" in chosen:
            run_files(args, gateways[0], files, file_storage, pg, logs, results)

        chat_faults = [f for f in chosen if f in CHAT_FAULTS]
        chat_ok = True
        if chat_faults:
            fault_seconds = rounds * (len(chat_faults) * gap + 25)
            duration = int(fault_seconds + 15)
            ready_file = base / "bench.ready"
            urls = ",".join(f"http://127.0.0.1:{g.http}" for g in gateways)  # type: ignore[attr-defined]
            bench_out = open(logs / "bench.json", "w")
            bench_err = open(logs / "bench.log", "w")
            bench = subprocess.Popen(
                [args.bench, "fault", "--url", urls, "--pairs", str(pairs), "--group-members", str(group), "--devices", "2",
                 "--rate", str(rate), "--duration", f"{duration}s", "--settle", "90s",
                 "--ready-file", str(ready_file)],
                stdout=bench_out, stderr=bench_err)
            wait_until("bench provisioned", lambda: ready_file.exists() or bench.poll() is not None, 300)
            if bench.poll() is not None:
                raise RuntimeError(f"bench exited early: {(logs / 'bench.log').read_text()[-2000:]}")
            log(f"load running: {pairs} pairs and a group of {group}, 2 devices per recipient, "
                f"{rate:g} msg/s per sender, {duration} s of sending")

            def pause(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for p in processes:
                        p.check_alive()
                    time.sleep(0.2)

            def fault(name: str, action) -> None:
                started = time.monotonic()
                log(f"fault: {name}")
                action()
                took = time.monotonic() - started
                results.setdefault("faults", []).append({"fault": name, "seconds": round(took, 1)})
                log(f"fault: {name}: recovered in {took:.1f} s")
                pause(gap)

            def kill_gateway(gw: Beehive) -> None:
                gw.signal(signal.SIGKILL)
                time.sleep(1)
                gw.start()
                gw.wait_ready()

            def rolling_restart() -> None:
                # A rollout: each gateway in turn gets SIGTERM, fails readiness, tells its
                # clients to reconnect (to the other one) and closes their sockets in waves
                # over the drain window, exits cleanly, and comes back.
                for gw in gateways:
                    gw.signal(signal.SIGTERM)
                    code = gw.proc.returncode if gw.proc else None
                    if code != 0:
                        raise RuntimeError(f"{gw.name} exited with {code} after SIGTERM; see {gw.log_path}")
                    gw.start()
                    gw.wait_ready()

            def restart_message(sig: int) -> None:
                message.signal(sig)
                message.start()
                message.wait_ready()

            def after_infra() -> None:
                # Components stay up through infrastructure restarts; wait until every one
                # reports its dependencies reachable again.
                wait_until("beehive ready again", lambda: all(p.ready() for p in processes), 120)

            pause(5)
            for r in range(rounds):
                victim = gateways[r % 2]
                actions = {
                    "gateway-kill": (f"kill -9 {victim.name} and start it again", lambda: kill_gateway(victim)),
                    "rolling-restart": (f"rolling restart of the gateways (SIGTERM, {args.drain_window} drain window)",
                                        rolling_restart),
                    # A graceful restart (rolling update) and a crash (kill -9 mid-transaction).
                    "message-term": ("restart the message service (SIGTERM)", lambda: restart_message(signal.SIGTERM)),
                    "message-kill": ("kill -9 the message service and start it again",
                                     lambda: restart_message(signal.SIGKILL)),
                    "rabbitmq": ("restart RabbitMQ", lambda: (rmq.restart(), after_infra())),
                    "redis": ("restart Redis", lambda: (redis.restart(), after_infra())),
                    "postgres": ("restart PostgreSQL (immediate shutdown)", lambda: (pg.restart(), after_infra())),
                }
                for name in CHAT_FAULTS:
                    if name in chat_faults:
                        fault(*actions[name])

            log("faults done; waiting for the bench to finish and verify")
            while bench.poll() is None:
                for p in processes:
                    p.check_alive()
                time.sleep(0.5)
            bench_out.close()
            bench_err.close()
            sys.stderr.write((logs / "bench.log").read_text())
            try:
                result = json.loads((logs / "bench.json").read_text())
            except json.JSONDecodeError:
                result = {}
            keys = ["acked", "expected_deliveries", "delivered_exactly_once", "missing", "mismatched",
                    "seq_gaps", "raw_duplicates", "live_order_violations", "final_sync_order_violations",
                    "idempotency_violations", "seq_collisions", "unacked_at_end", "resent", "reconnects",
                    "reconnect_frames", "peak_reconnects_per_second", "syncs", "gap_syncs", "error_replies"]
            lines = results.setdefault("lines", [])
            for k in keys:
                lines.append(f"  {k:32} {result.get(k)}")
            busy = [f"{s}s:{n}" for s, n in result.get("reconnects_per_second", [])]
            lines.append(f"  {'reconnects per second':32} {' '.join(busy)}")
            for v in result.get("violations", [])[:20]:
                lines.append(f"  violation: {v}")
            chat_ok = bench.returncode == 0 and result.get("ok") is True
        exits = {p.name: p.unexpected_exits for p in processes if p.unexpected_exits}
        print(json.dumps({"faults": results.get("faults", []), "unexpected_exits": exits}, indent=2))
        for line in results.get("lines", []):
            print(line)
        ok = chat_ok
        if exits:
            log(f"beehive processes exited on their own during the faults: {exits}")
            ok = False
        return 0 if ok else 1
    except file_fault.FileFaultError as e:
        log(f"!! file-kill failed: {e}")
        return 1
    finally:
        if bench and bench.poll() is None:
            bench.kill()
        for p in processes:
            p.signal(signal.SIGTERM)
        rmq.stop() if port_open(rmq.port) else None
        redis.stop()
        pg.stop()
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"logs and data kept in {base}")
        print(f"fault: {1 if ok else 0} passed, {0 if ok else 1} failed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
