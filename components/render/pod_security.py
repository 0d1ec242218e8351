"""The Pod Security Standards' checks, applied to rendered pod specs offline.

What the admission controller would say at apply time, said in the tests instead:
``violations(spec, "restricted")`` lists each rule of that level (and of the levels
below) that the pod breaks. Rules after the Pod Security Standards page (v1.33),
the fields the tests' pods can set; AppArmor/SELinux/sysctls are checked too since
upstream pods may set them.
"""

from __future__ import annotations

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def _baseline(spec: dict) -> list[str]:
    out = [f"host namespace: {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    out += [f"hostPath volume {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
    out += [f"unsafe sysctl {s['name']}" for s in (spec.get("securityContext") or {}).get("sysctls", [])
            if s["name"] not in SAFE_SYSCTLS]
    pod_ctx = spec.get("securityContext") or {}
    for ctx, where in [(pod_ctx, "pod"), *[(c.get("securityContext") or {}, c["name"]) for c in containers(spec)]]:
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: seccomp Unconfined")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: AppArmor Unconfined")
        se = ctx.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"{where}: SELinux options {se}")
    for c in containers(spec):
        ctx = c.get("securityContext") or {}
        if ctx.get("privileged"):
            out.append(f"{c['name']}: privileged")
        extra = set((ctx.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if extra:
            out.append(f"{c['name']}: adds capabilities {sorted(extra)}")
        if ctx.get("procMount", "Default") != "Default":
            out.append(f"{c['name']}: procMount {ctx['procMount']}")
        out += [f"{c['name']}: hostPort {p['hostPort']}" for p in c.get("ports", []) if p.get("hostPort")]
    return out


def _restricted(spec: dict) -> list[str]:
    out = [f"volume {v['name']} of a type restricted disallows" for v in spec.get("volumes", [])
           if not (set(v) - {"name"}) <= RESTRICTED_VOLUMES]
    pod_ctx = spec.get("securityContext") or {}
    pod_non_root = pod_ctx.get("runAsNonRoot") is True
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if pod_ctx.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    for c in containers(spec):
        ctx, name = c.get("securityContext") or {}, c["name"]
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        non_root = ctx.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or {}).get("type")
        if not (seccomp in ("RuntimeDefault", "Localhost") or (seccomp is None and pod_seccomp)):
            out.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities beyond NET_BIND_SERVICE")
    return out


def violations(spec: dict, level: str = "restricted") -> list[str]:
    """Every rule of ``level`` (baseline rules included for restricted) that the pod spec breaks."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}")
    if level == "privileged":
        return []
    out = _baseline(spec)
    return out + _restricted(spec) if level == "restricted" else out


def enforced(namespace_obj: dict) -> str:
    """The level a Namespace enforces (privileged when unlabelled, as the admission plugin's default)."""
    return (namespace_obj["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce", "privileged")
