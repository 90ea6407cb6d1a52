"""The Pod Security Standards' "restricted" profile, checked on rendered objects, plus
what Tollgate asks of its pods beyond it (a read-only root filesystem, no service-account
token). https://kubernetes.io/docs/concepts/security/pod-security-standards/ lists the
rules; each below names the control it checks."""

from __future__ import annotations

# Objects whose pod template is at spec.template.spec (or spec.jobTemplate... for CronJob).
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# Volume types the restricted profile allows.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


def pod_spec(obj: dict) -> dict | None:
    """The pod spec an object runs, or None for objects that run no pod."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec", {})
    if kind in WORKLOADS:
        return obj.get("spec", {}).get("template", {}).get("spec", {})
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def violations(obj: dict) -> list[str]:
    """What in `obj` breaks the profile (empty: it meets it, or runs no pod)."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    found = []
    pod_ctx = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"{name}: {field} (host namespaces)")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"{name}: volume {volume['name']} is {sorted(kinds)} (volume types)")
    if pod_ctx.get("runAsUser") == 0:
        found.append(f"{name}: pod runAsUser 0 (running as non-root user)")
    if not spec.get("automountServiceAccountToken") is False:
        found.append(f"{name}: automountServiceAccountToken is not false (a token it does not need)")
    containers = [*spec.get("initContainers", []), *spec.get("containers", []),
                  *spec.get("ephemeralContainers", [])]
    for c in containers:
        where = f"{name} container {c['name']}"
        ctx = c.get("securityContext", {})
        if ctx.get("privileged"):
            found.append(f"{where}: privileged (privileged containers)")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false (privilege escalation)")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{where}: capabilities do not drop ALL (capabilities)")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities {caps['add']} (capabilities)")
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{where}: runAsNonRoot is not true (running as non-root)")
        if ctx.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0 (running as non-root user)")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile is {seccomp} (seccomp)")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: readOnlyRootFilesystem is not true")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{where}: hostPort {port['hostPort']} (host ports)")
        for option in ("procMount",):
            if ctx.get(option) not in (None, "Default"):
                found.append(f"{where}: {option} {ctx[option]} (/proc mount type)")
    return found
