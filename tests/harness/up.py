"""The main job: a complete Tollgate on this machine, in the foreground until Ctrl-C.

With OPENAI_API_KEY set, the gpt-* models go to api.openai.com; otherwise everything goes
to the offline provider, so the demo works with no internet and no provider account.
Ports are fixed so the printed URLs stay the same run after run; each can be moved with
an environment variable (TOLLGATE_GATEWAY_PORT, TOLLGATE_HTTP_PORT, TOLLGATE_GRPC_PORT,
TOLLGATE_ADMIN_PORT, TOLLGATE_PROVIDER_PORT).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.stack import ROOT, Provider, Stack  # noqa: E402

# USD per 1M tokens: input, output, cache read, cache write (OpenAI's list prices).
DEMO_MODELS = {
    "gpt-4o-mini": (0.15, 0.60, 0.075, 0.0),
    "gpt-4o": (2.50, 10.00, 1.25, 0.0),
    "gpt-4.1-mini": (0.40, 1.60, 0.10, 0.0),
}


DEMO_ADMIN = "admin"


def port(var: str, default: int) -> int:
    value = os.environ.get(var, str(default))
    if not value.isdigit() or not 0 < int(value) < 65536:
        sys.exit(f"{var}={value!r} is not a port number")
    return int(value)


def kept_session_secret(workdir: Path) -> str:
    """The demo's session secret, made once and kept (owner-only) so a restart keeps people
    signed in."""
    path = workdir / "session-secret"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def demo_admin(stack: Stack) -> str:
    """The demo's admin: created on the first run with a fresh password kept (owner-only)
    beside the session secret, so every run prints the same login."""
    path = stack.workdir / "admin-password"
    if not path.exists():
        password = secrets.token_urlsafe(12)
        stack.cli("users", "create", DEMO_ADMIN, "--role", "admin", stdin=password + "\n")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
    return path.read_text().strip()


def main() -> None:
    real_key = os.environ.get("OPENAI_API_KEY", "").strip()
    if real_key:
        provider = Provider("openai", DEMO_MODELS, api_key=real_key, remote="api.openai.com:443")
        where = "api.openai.com (OPENAI_API_KEY is set)"
    else:
        provider = Provider("offline", DEMO_MODELS, port=port("TOLLGATE_PROVIDER_PORT", 9000))
        where = "the offline provider (no OPENAI_API_KEY set)"

    workdir = ROOT / ".tollgate" / "demo"
    stack = Stack(
        workdir=workdir,
        session_secret=kept_session_secret(workdir),
        providers=[provider],
        gateway_port=port("TOLLGATE_GATEWAY_PORT", 10000),
        http_port=port("TOLLGATE_HTTP_PORT", 8080),
        grpc_port=port("TOLLGATE_GRPC_PORT", 50051),
        admin_port=port("TOLLGATE_ADMIN_PORT", 9901),
        dashboard=True,
    )
    print(f"Starting Tollgate; models route to {where}. Logs: {stack.workdir}/*.log", flush=True)
    stack.start()
    try:
        admin_password = demo_admin(stack)
        key = stack.create_key(f"demo-{time.strftime('%Y%m%d-%H%M%S')}", user=DEMO_ADMIN)
        print(f"""
Tollgate is up (Envoy ready {stack.envoy_ready_seconds:.2f}s after start).

  Gateway (OpenAI-compatible): {stack.gateway_url}/v1
  Dashboard:                   {stack.control_plane_url}/  (sign in as {DEMO_ADMIN} / {admin_password})
  Control plane HTTP API:      {stack.control_plane_url}/api  (/api/openapi.json)
  Envoy admin:                 {stack.admin_url}
  Demo key:                    {key}

Try it:
  curl {stack.gateway_url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}'

  python -c 'import openai; c = openai.OpenAI(base_url="{stack.gateway_url}/v1", api_key="{key}"); \\
print(c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role":"user","content":"Hello"}}]).choices[0].message.content)'

  Usage so far: target/debug/tollgate --config {stack.config_path} usage list

Press Ctrl-C to stop.""", flush=True)
        # Explicit: a shell that starts us in the background leaves SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping Tollgate…", flush=True)
    except RuntimeError as e:
        print(f"\n{e}", file=sys.stderr)
        sys.exit(1)
    finally:
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
