"""Dashboard benchmark: the page in real headless Chromium on an appliance with a fleet.

The real appliance (`edgeloop run`) holds ``--robots`` robot entities kept changing by
simulated robots over TCP (bench/fanout.py's, ``--robot-rate`` Hz each) and logs them.
Two phases, each ``--duration / 2`` seconds:

1. The page (runtime/web/static/) opened in Debian's /usr/bin/chromium (Playwright,
   headless) as a viewer, with a trend of ``--trend-fields`` fields open: the bytes/s it
   receives (CDP Network events: WebSocket frames and HTTP bodies), the World updates
   it gets per second, and its CPU: the renderer's main thread (CDP Performance
   ``TaskDuration``) and every Chromium process together (/proc, via psutil), as % of
   one core. Target: under 20 %.
2. ``--dashboards`` WebSocket clients doing what the page does with no trend open (JSON,
   every component at 30 Hz, the loop and the audit log once a second), once they are
   connected: the io process's CPU above its idle figure, scaled to 100 dashboards.
   Target: under 10 % of a core.

    python bench/dashboard.py [--duration 20] [--json OUT] [--robots 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import appliance
import psutil
from playwright.async_api import async_playwright
from report import emit, machine_description
from websockets.asyncio.client import connect

from edgeloop.sim.ports import free_port

TOKEN_VIEWER = "bench-viewer-0123456789"
TOKEN_ROBOT = "bench-robot-0123456789"  # bench/fanout.py's robots use it
CHROMIUM = "/usr/bin/chromium"
STARTUP_S = 60.0
ROBOT_PROCS = 2  # as bench/fanout.py: one Python process does not keep 1 000 robots up
CLIENT_PROCS = 2
CONNECT_S = 5.0  # for 100 dashboards to connect and get the World before a window
HELLO = (
    '["edgeloop.Hello","8da04678790f4563",'
    '{"client_id":"bench-%d","token":"%s","role":"viewer","protocol_version":1}]'
)
SUBSCRIBE = (
    '["edgeloop.Subscribe","b24f47465472e323",{"topic":"world","max_hz":30,"components":[]}]'
)
SUBSCRIBE_LOOP = SUBSCRIBE.replace('"world"', '"loop"')
SUBSCRIBE_AUDIT = SUBSCRIBE.replace('"world"', '"audit"')


def _config(folder: Path, tcp_port: int, ws_port: int) -> Path:
    config = folder / "config.yaml"
    config.write_text(f"""runtime: {{name: dashboard-bench, state_dir: {folder}/state}}
network:
  # a fleet of 1 000 connecting at once on a busy box takes longer than the default 5 s
  tcp: {{host: 127.0.0.1, port: {tcp_port}, hello_timeout_s: 60}}
  websocket: {{host: 127.0.0.1, port: {ws_port}, max_lag_s: 10, hello_timeout_s: 60}}
  tokens:
    - {{token: {TOKEN_ROBOT}, role: device}}
    - {{token: {TOKEN_VIEWER}, role: viewer}}
robots: {{}}
tank_plant:
  tanks: [{{name: tank1}}, {{name: tank2}}]
data_log: {{}}
""")
    return config


def _wait_for(url: str, deadline_s: float = STARTUP_S) -> None:
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > give_up:
                raise TimeoutError(f"the appliance never answered {url}") from None
            time.sleep(0.2)  # polling a server that is starting, bounded by the deadline


def _fields(ws_port: int, wanted: int) -> list[str]:
    """``wanted`` logged fields once the data log has them (robots' and tanks')."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{ws_port}/api/fields",
        headers={"Authorization": f"Bearer {TOKEN_VIEWER}"},
    )
    give_up = time.monotonic() + STARTUP_S
    while True:
        with urllib.request.urlopen(request, timeout=5) as answer:
            fields = [
                f for f in json.load(answer)["fields"] if "Robot.position" in f or "TankLevel" in f
            ]
        if len(fields) >= wanted or time.monotonic() > give_up:
            return fields[:wanted]
        time.sleep(0.5)  # the data log flushes once a second


def _wait_for_robots(ws_port: int, count: int) -> None:
    """Until the appliance has every robot connected (its /metrics would say; the
    loop figures do not, so this counts the World's robots over /ws)."""
    asyncio.run(_count_robots(ws_port, count))


async def _count_robots(ws_port: int, count: int) -> None:
    async with connect(f"ws://127.0.0.1:{ws_port}/ws", max_size=None) as ws:
        await ws.send(HELLO % (-1, TOKEN_VIEWER))
        await ws.recv()
        await ws.send(SUBSCRIBE.replace('"components":[]', '"components":["Robot"]'))
        connected: set[int] = set()
        async with asyncio.timeout(STARTUP_S):
            while len(connected) < count:
                _, _, update = json.loads(await ws.recv())
                for change in update.get("changed", []):
                    if change["values"].get("connection"):
                        connected.add(change["entity"])


def _chromium_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()]


def _renderers(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The page's own processes (Chromium's renderers), not its browser, GPU or network."""
    found = []
    for process in processes:
        try:
            if "--type=renderer" in process.cmdline():
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


async def _page_phase(ws_port: int, fields: list[str], seconds: float) -> dict[str, Any]:
    origin = f"http://127.0.0.1:{ws_port}/"
    received = {"ws": 0, "http": 0, "updates": 0}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.add_init_script(
                f"localStorage.setItem('edgeloop.trends', {json.dumps(json.dumps(fields))})"
            )
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await cdp.send("Network.enable")
            await cdp.send("Performance.enable")

            def frame(event: dict[str, Any]) -> None:
                data = event["response"]["payloadData"]
                received["ws"] += len(data)
                received["updates"] += data.startswith('["edgeloop.WorldUpdate"')

            def data(event: dict[str, Any]) -> None:
                received["http"] += event["encodedDataLength"]

            await page.goto(f"{origin}?token={TOKEN_VIEWER}", timeout=STARTUP_S * 1000)
            await page.wait_for_selector("#link[data-state=live]", timeout=STARTUP_S * 1000)
            await page.wait_for_selector("#robots tr", timeout=STARTUP_S * 1000)
            cdp.on("Network.webSocketFrameReceived", frame)
            cdp.on("Network.dataReceived", data)
            chromium = _chromium_processes()
            renderers = _renderers(chromium)
            before = await _metrics(cdp)
            cpu_before, started = appliance.cpu_seconds(chromium), time.monotonic()
            renderer_before, received_before = appliance.cpu_seconds(renderers), dict(received)
            await asyncio.sleep(seconds)  # the measured window
            elapsed, cpu = time.monotonic() - started, appliance.cpu_seconds(chromium) - cpu_before
            renderer_cpu = appliance.cpu_seconds(renderers) - renderer_before
            got = {k: v - received_before[k] for k, v in received.items()}
            after = await _metrics(cdp)
            picked = await page.locator("#trend-picked li").count()
        finally:
            await browser.close()
    window = after["Timestamp"] - before["Timestamp"]
    return {
        "trend_fields": picked,
        "page_bytes_per_s": round((got["ws"] + got["http"]) / elapsed),
        "ws_bytes_per_s": round(got["ws"] / elapsed),
        "updates_per_s": round(got["updates"] / elapsed, 1),
        "renderer_main_cpu_pct": round(
            100 * (after["TaskDuration"] - before["TaskDuration"]) / window, 1
        ),
        # where the main thread's time goes, ms per second
        **{
            f"{name.removesuffix('Duration').lower()}_ms_per_s": round(
                1000 * (after[name] - before[name]) / window, 1
            )
            for name in ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
        },
        "renderer_cpu_pct": round(100 * renderer_cpu / elapsed, 1),
        "chromium_cpu_pct": round(100 * cpu / elapsed, 1),
    }


async def _metrics(cdp: Any) -> dict[str, float]:
    answer = await cdp.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in answer["metrics"]}


async def _dashboards(ws_port: int, count: int, seconds: float, page: bool) -> list[int]:
    """``count`` page-like clients for ``seconds``: the World at 30 Hz, and with
    ``page`` the page's other topics too (the loop and the audit log, once a second):
    their World update counts."""
    updates = [0] * count

    async def one(index: int) -> None:
        async with connect(f"ws://127.0.0.1:{ws_port}/ws", max_size=None, compression=None) as ws:
            await ws.send(HELLO % (index, TOKEN_VIEWER))
            await ws.recv()
            await ws.send(SUBSCRIBE)
            if page:
                await ws.send(SUBSCRIBE_LOOP)
                await ws.send(SUBSCRIBE_AUDIT)
            loop = asyncio.get_running_loop()
            stop_at = loop.time() + seconds
            while (left := stop_at - loop.time()) > 0:
                try:
                    # undecoded: the clients' UTF-8 decoding is not the appliance's cost
                    message = await asyncio.wait_for(ws.recv(decode=False), left)
                except TimeoutError:
                    break
                updates[index] += message.startswith(b'["edgeloop.WorldUpdate"')

    await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return updates


def _dashboard_argv(ws_port: int, seconds: float, page: bool) -> Callable[[int, Path], list[str]]:
    """How ``appliance.client_processes`` starts this script's ``_dashboards``."""

    def argv(count: int, out: Path) -> list[str]:
        options = ["--port", str(ws_port), "--count", str(count), "--seconds", str(seconds)]
        return [sys.executable, __file__, "--child", *options, "--out", str(out)] + (
            ["--page"] if page else []
        )

    return argv


def _loop_thread_seconds(io: psutil.Process) -> float:
    """CPU of the io process's main thread: its event loop, where the dashboards are
    served (the data log writes from a thread of its own, which it leaves out)."""
    for thread in io.threads():
        if thread.id == io.pid:
            return float(thread.user_time + thread.system_time)
    raise LookupError("no main thread")


def _io_cpu_pct(io: psutil.Process, seconds: float) -> tuple[float, float]:
    """The io process's CPU, and its event loop's, over the next ``seconds``, % of one
    core."""
    before, loop_before = appliance.cpu_seconds([io]), _loop_thread_seconds(io)
    started = time.monotonic()
    time.sleep(seconds)  # the measured window
    elapsed = time.monotonic() - started
    return (
        100 * (appliance.cpu_seconds([io]) - before) / elapsed,
        100 * (_loop_thread_seconds(io) - loop_before) / elapsed,
    )


def _server_phase(io: psutil.Process, ws_port: int, count: int, seconds: float) -> dict[str, Any]:
    """The io process's CPU with no dashboards, then with ``count`` getting the World,
    then the page's loop and audit topics too (each a third of ``seconds``, at least 3 s),
    then none again: the baseline is the mean of the two idle windows. With dashboards
    it is measured once they are connected and have had their first update, the whole
    World: a dashboard stays open for hours, it connects once."""
    window = max(3.0, seconds / 3)
    idle_before = _io_cpu_pct(io, window)  # the io process's own load: the baseline
    busy = {}
    served = {}
    for name, page in (("ws", False), ("page", True)):
        seconds_up = CONNECT_S + window
        argv = _dashboard_argv(ws_port, seconds_up, page)
        wait_s = seconds_up + STARTUP_S
        with appliance.client_processes(argv, count, procs=CLIENT_PROCS, wait_s=wait_s) as outs:
            time.sleep(CONNECT_S)  # a load ramp before the window, not a synchronisation
            busy[name] = _io_cpu_pct(io, window)
        served[name] = sum(1 for updates in outs for u in updates if u > 1)
    idle_after = _io_cpu_pct(io, window)
    idle, loop_idle = ((a + b) / 2 for a, b in zip(idle_before, idle_after, strict=True))
    found: dict[str, Any] = {
        "dashboards": count,
        "io_idle_cpu_pct": round(idle, 1),
        "io_loop_idle_cpu_pct": round(loop_idle, 1),
    }
    for name, (pct, loop_pct) in busy.items():
        found[f"{name}_served"] = served[name]
        found[f"{name}_io_cpu_pct"] = round(pct, 1)
        found[f"{name}_io_cpu_pct_per_100"] = round((pct - idle) * 100 / count, 1)
        found[f"{name}_io_loop_cpu_pct_per_100"] = round((loop_pct - loop_idle) * 100 / count, 1)
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    tcp_port, ws_port = free_port(), free_port()
    seconds = max(3.0, args.duration / 2)  # the page's phase, then the server's
    with tempfile.TemporaryDirectory() as folder:
        config = _config(Path(folder), tcp_port, ws_port)
        with appliance.running(config) as supervisor:
            _wait_for(f"http://127.0.0.1:{ws_port}/healthz")
            seconds_up = 5 * seconds + 2 * CONNECT_S + STARTUP_S
            fleet = appliance.robots(
                tcp_port,
                args.robots,
                procs=ROBOT_PROCS,
                rate_hz=args.robot_rate,
                seconds=seconds_up,
            )
            with fleet:
                _wait_for_robots(ws_port, args.robots)
                fields = _fields(ws_port, args.trend_fields)
                page = asyncio.run(_page_phase(ws_port, fields, seconds))
                io = appliance.io_process(supervisor.pid)
                server = _server_phase(io, ws_port, args.dashboards, seconds)
    return {
        "robots": args.robots,
        "robot_rate_hz": args.robot_rate,
        "seconds_per_phase": seconds,
        "page": page,
        "server": server,
        "machine": f"{machine_description()}, python {platform.python_version()}",
    }


def table(result: dict[str, Any]) -> str:
    page, server = result["page"], result["server"]
    return "\n".join(
        [
            f"edgeloop dashboard: {result['robots']} robots at {result['robot_rate_hz']} Hz "
            f"({result['machine']})",
            "",
            f"page (Chromium, {page['trend_fields']} trend fields): "
            f"{page['page_bytes_per_s']} B/s ({page['ws_bytes_per_s']} over /ws), "
            f"{page['updates_per_s']} updates/s; CPU, % of a core: the page's renderer "
            f"{page['renderer_cpu_pct']} (its main thread busy {page['renderer_main_cpu_pct']}), "
            f"all Chromium processes {page['chromium_cpu_pct']}",
            f"server, {server['dashboards']} dashboards: io process idle "
            f"{server['io_idle_cpu_pct']} % (its event loop {server['io_loop_idle_cpu_pct']} %); "
            f"the World only {server['ws_io_cpu_pct']} % ({server['ws_io_cpu_pct_per_100']} % "
            f"per 100, event loop {server['ws_io_loop_cpu_pct_per_100']} %, "
            f"{server['ws_served']} served); the page's topics {server['page_io_cpu_pct']} % "
            f"({server['page_io_cpu_pct_per_100']} % per 100, event loop "
            f"{server['page_io_loop_cpu_pct_per_100']} %, {server['page_served']} served)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--robot-rate", type=float, default=5.0)
    parser.add_argument("--trend-fields", type=int, default=10)
    parser.add_argument("--dashboards", type=int, default=100)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--page", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        updates = asyncio.run(_dashboards(args.port, args.count, args.seconds, args.page))
        args.out.write_text(json.dumps(updates))
        return
    result = run(args)
    emit(table(result), result, args.json)


if __name__ == "__main__":
    main()
