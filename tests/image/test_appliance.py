"""The built image on a QEMU machine, checked from the host as an installer would.

One device for the whole module, in file order: the first boot, the running service
and its HTTP face through the forwarded port, systemd's restarts, the read-only root,
a power cut. (The A/B update test goes on with the same device: test_update.py.)
"""

from __future__ import annotations

import http.client
import json
import re
import ssl

from tests.image.conftest import BOOT_TIMEOUT_S, GROW_MIB, Appliance
from tests.image.guest import Guest

SERVICE_TIMEOUT_S = 600
# The image has no procps: the control process found by its name in /proc.
CONTROL_PID = (
    'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = edgeloop-ctl ] '
    "&& echo ${p#/proc/}; done; true"
)
TOKEN = re.compile(r"edgeloop viewer token: (\S+)")


def service(guest: Guest, *properties: str) -> dict[str, str]:
    out = guest.check(f"systemctl show edgeloop.service -p {','.join(properties)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_active(guest: Guest, *, restarts_above: int = -1) -> dict[str, str]:
    """edgeloop.service active (for Type=notify: READY=1 came) after that many restarts."""
    guest.wait_for(
        "systemctl show edgeloop.service -p ActiveState,NRestarts | tr '\\n' ' ' | "
        f"grep -q 'ActiveState=active' && "
        f"[ $(systemctl show edgeloop.service -p NRestarts --value) -gt {restarts_above} ]",
        SERVICE_TIMEOUT_S,
    )
    return service(guest, "ActiveState", "SubState", "Type", "NRestarts", "MainPID", "StatusText")


def https(guest: Guest, path: str, token: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` on the forwarded port, trusting only the device's own certificate."""
    context = ssl.create_default_context(cadata=guest.check("cat /data/config/tls/cert.pem"))
    # The certificate names the device's host name; the test reaches it as 127.0.0.1.
    context.check_hostname = False
    connection = http.client.HTTPSConnection(
        "127.0.0.1", guest.http_port, context=context, timeout=30
    )
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_first_boot_prints_the_dashboard_url_and_a_viewer_token(appliance: Appliance) -> None:
    console = appliance.guest.wait_console("edgeloop viewer token:", BOOT_TIMEOUT_S)
    assert "edgeloop dashboard: https://10.0.2.15:8080/" in console
    match = TOKEN.search(console)
    assert match and len(match.group(1)) == 32
    fragment = appliance.guest.check("cat /data/config/conf.d/10-firstboot.yaml")
    assert match.group(1) in fragment
    assert "demo-" not in fragment + appliance.guest.check("cat /etc/edgeloop/config.yaml")
    key_mode = appliance.guest.check("stat -c '%U:%G %a' /data/config/tls/key.pem").strip()
    assert key_mode == "root:edgeloop 640"


def test_the_service_is_active_after_ready(appliance: Appliance) -> None:
    state = wait_active(appliance.guest)
    assert state["Type"] == "notify"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert state["StatusText"], "the supervisor's STATUS= line"
    assert appliance.guest.check(CONTROL_PID).strip().isdigit()
    appliance.guest.wait_for("test -e /run/edgeloop-committed", SERVICE_TIMEOUT_S)
    grubenv = appliance.guest.check("grub-editenv /boot/efi/EFI/BOOT/grubenv list")
    assert "A_TRY=0" in grubenv.split(), "READY commits the booted slot"


def test_systemd_keeps_the_boards_watchdog_alive(appliance: Appliance) -> None:
    # QEMU's q35 board has the ICH9 TCO watchdog (iTCO_wdt), as an industrial PC does.
    guest = appliance.guest
    assert guest.check("systemctl show -p RuntimeWatchdogUSec --value").strip() == "30s"
    watchdog = "/sys/class/watchdog/watchdog0"
    assert guest.check(f"cat {watchdog}/state {watchdog}/timeout").split() == ["active", "30"]
    assert "panic=10" in guest.check("cat /proc/cmdline").split()


def test_the_control_process_runs_on_the_isolated_core(appliance: Appliance) -> None:
    guest = appliance.guest
    cmdline = guest.check("cat /proc/cmdline")
    for flag in ("isolcpus=nohz,domain,managed_irq,1", "nohz_full=1", "rcu_nocbs=1"):
        assert flag in cmdline
    assert "threadirqs" in cmdline
    assert guest.check("cat /sys/devices/system/cpu/isolated").strip() == "1"
    affinity = guest.check(f"taskset -pc $({CONTROL_PID})")
    assert affinity.strip().endswith(": 1"), affinity


def test_healthz_readyz_and_metrics_answer_through_the_forwarded_port(
    appliance: Appliance,
) -> None:
    guest = appliance.guest
    token = TOKEN.search(guest.console_text())
    assert token
    status, body = https(guest, "/healthz")
    assert status == 200, body
    assert json.loads(body)["status"] in ("ok", "degraded")
    status, _ = https(guest, "/metrics")
    assert status in (401, 403), "no token, no metrics"
    status, body = https(guest, "/metrics", token.group(1))
    assert status == 200
    assert b"# TYPE" in body
    status, body = https(guest, "/readyz")
    assert status == 200, body
    assert json.loads(body)["ready"] is True


def test_the_root_file_system_is_read_only(appliance: Appliance) -> None:
    guest = appliance.guest
    options = guest.check("findmnt -no OPTIONS /").split(",")
    assert "ro" in options
    refused = guest.run("touch /etc/edgeloop/probe")
    assert refused.code != 0
    assert "Read-only file system" in refused.err
    assert guest.check("findmnt -no SOURCE,FSTYPE /data").split()[1] == "ext4"


def test_the_first_boot_grew_the_data_partition(appliance: Appliance) -> None:
    appliance.guest.wait_for("systemctl is-active -q edgeloop-grow-data", SERVICE_TIMEOUT_S)
    size_mib = int(appliance.guest.check("df -m --output=size /data | tail -1"))
    # The image's data partition is 256 MiB; the disk got GROW_MIB more.
    assert size_mib > 256 + GROW_MIB // 2, size_mib


def test_a_stalled_control_process_makes_systemd_restart_the_unit(appliance: Appliance) -> None:
    # The supervisor finds the stalled loop within runtime.control_timeout_s and exits 1
    # (systemd/README.md): the restart comes from Restart=on-failure.
    guest = appliance.guest
    before = wait_active(guest)
    guest.check(f"kill -STOP $({CONTROL_PID})")
    after = wait_active(guest, restarts_above=int(before["NRestarts"]))
    assert after["MainPID"] != before["MainPID"]
    journal = guest.check("journalctl -b -u edgeloop.service --no-pager -o cat")
    assert "control loop stalled" in journal


def test_a_stalled_supervisor_is_restarted_by_the_watchdog(appliance: Appliance) -> None:
    # No WATCHDOG=1 for WatchdogSec: systemd aborts the unit and restarts it.
    guest = appliance.guest
    before = wait_active(guest)
    guest.check(f"kill -STOP {before['MainPID']}")
    after = wait_active(guest, restarts_above=int(before["NRestarts"]))
    assert after["MainPID"] != before["MainPID"]
    journal = guest.check("journalctl -b -u edgeloop.service --no-pager -o cat")
    assert "Failed with result 'watchdog'" in journal


def test_a_power_cut_leaves_the_data_partition_and_the_audit_log_intact(
    appliance: Appliance,
) -> None:
    guest = appliance.guest
    wait_active(guest)
    entries_before = guest.check("edgeloop audit tail -n 1000 | wc -l")
    # The first boot kept its machine id for the next ones (edgeloop-machine-id).
    guest.wait_for(
        "grub-editenv /boot/efi/EFI/BOOT/grubenv list | grep -q ^MACHINE_ID=", SERVICE_TIMEOUT_S
    )
    machine_id = guest.check("cat /etc/machine-id")
    appliance.power_cut()
    guest = appliance.boot()
    wait_active(guest)
    assert guest.check("cat /etc/machine-id") == machine_id
    # So the journal of the boot before is this machine's too.
    assert guest.check("journalctl -b -1 -n 1 -q --no-pager -o cat").strip()
    # The data file system was not unmounted: its check before the mount passed.
    assert guest.check("findmnt -no OPTIONS /data").startswith("rw")
    fsck = guest.check(
        "systemctl show -p Result,ActiveState 'systemd-fsck@dev-disk-by\\x2dlabel-data.service'"
    )
    assert "Result=success" in fsck and "ActiveState=active" in fsck, fsck
    guest.check("edgeloop audit verify")
    entries_after = guest.check("edgeloop audit tail -n 1000 | wc -l")
    assert int(entries_after) >= int(entries_before)
    # The first boot's secrets were kept, not made again.
    assert "edgeloop viewer token:" not in guest.console_text()
