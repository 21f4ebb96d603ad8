"""Real-client interop: the official Python MCP SDK (mcp==2.3.0) against `xyte-edge serve --demo`, through
`xyte-edge mcp` (the stdio bridge to the Unix socket) and over Streamable HTTP on the LAN TLS listener (bearer token,
trusting the generated certificate), in the legacy, auto and 2026-07-28 modes.

Usage: python tests/interop/mcp_python.py path/to/xyte-edge
  (MODES="legacy auto 2026-07-28" and TRANSPORTS="socket https" by default)
Exits non-zero with a message on the first failed check.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import urllib.request

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

BINARY = os.path.abspath(sys.argv[1])
NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def start_daemon(workdir):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "XDG_STATE_HOME": os.path.join(workdir, "state"),
        "XDG_RUNTIME_DIR": os.path.join(workdir, "run"),
        "XYTE_LOG_FORMAT": "text",
    }
    proc = subprocess.Popen([BINARY, "serve", "--demo"], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    socket = None
    sim = None
    lan = cert = token = None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "simulated Xyte org:" in line:
            sim = line.split("simulated Xyte org:", 1)[1].split()[0].split("/core/")[0]
        if "MCP socket:" in line:
            socket = line.split("MCP socket:", 1)[1].strip()
        if "LAN HTTPS:" in line:
            lan = line.split("LAN HTTPS:", 1)[1].strip().rstrip("/")
        if "TLS certificate:" in line:
            cert = line.split("TLS certificate:", 1)[1].split(" (SHA-256")[0].strip()
        if "admin token:" in line:
            token = line.split("admin token:", 1)[1].split()[0]
        if line.startswith("synced "):
            break
    check(socket is not None, "the demo printed its MCP socket:\n" + "".join(lines))
    check(sim is not None, "the demo printed the simulator's address")
    check(lan and cert and token, "the demo printed its HTTPS address, certificate and admin token")
    # Keep reading the daemon's output: a pipe nobody reads fills up (64 KiB) and then blocks the daemon's logging.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    port = lan.rsplit(":", 1)[1]
    https = {"url": f"https://localhost:{port}/mcp", "cert": os.path.join(workdir, cert), "token": token}
    return proc, (os.path.join(workdir, socket) if not os.path.isabs(socket) else socket), sim, https


def set_status(sim, device_id, status):
    req = urllib.request.Request(f"{sim}/_sim/devices/{device_id}/status", data=json.dumps({"status": status}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        check(r.status == 200, "the simulator changed the device status")


def structured(result, what):
    check(not result.is_error, f"{what} succeeded: {result.content}")
    data = result.structured_content
    check(isinstance(data, dict) and data, f"{what} returned structured content")
    text = result.content[0].text
    check(json.loads(text) == data, f"{what}: the text block carries the same JSON")
    return data


async def exercise(transport, mode, socket, sim, https):
    if transport == "socket":
        target = StdioServerParameters(command=BINARY, args=["mcp", "--socket", socket])
    else:
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {https['token']}"}, verify=https["cert"],
                                    timeout=60)
        target = streamable_http_client(https["url"], http_client=client)
    mode_label = f"{transport}/{mode}"
    updates = []

    async def on_message(message):
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            updates.append(str(root.params.uri))

    async with Client(target, mode=mode, message_handler=on_message) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        for name in tools:
            check(NAME_RE.match(name), f"tool name {name!r} is valid")
        check(len(tools) >= 32, f"{mode_label}: all tools listed ({len(tools)})")
        called = set()
        real_call = c.call_tool

        async def call_tool(name, args, **kw):
            called.add(name)
            return await real_call(name, args, **kw)

        c.call_tool = call_tool

        devices = structured(await c.call_tool("list_devices", {"limit": 100}), "list_devices")["devices"]
        check(len(devices) == 40, f"{mode_label}: 40 demo devices listed, got {len(devices)}")
        device = next(d for d in devices if d["status"] == "online")
        # The device whose status change the subscription check below waits for: a different one in each run, so
        # one run's flip is never mistaken for another's, held online by the simulator from now on.
        candidates = [d for d in devices if d["status"] == "online" and d["id"] != device["id"]]
        target_device = candidates[("socket", "https").index(transport) * 3 + ("legacy", "auto", "2026-07-28").index(mode) + 1]
        set_status(sim, target_device["id"], "online")
        status = structured(await c.call_tool("get_device_status", {"device_id": device["id"]}), "get_device_status")
        check(status["device"]["id"] == device["id"], "get_device_status returns the device")
        structured(await c.call_tool("list_device_commands", {"device_id": device["id"]}), "list_device_commands")
        since = int(time.time()) - 40 * 86400
        hist = structured(await c.call_tool("search_device_histories", {"device_id": device["id"], "from": since}),
                          "search_device_histories")
        check(hist["windows"] == 2 and hist["total"] > 0, f"40 days of history in two windows: {hist['windows']}, {hist['total']}")
        incidents = structured(await c.call_tool("list_incidents", {}), "list_incidents")["incidents"]
        check(incidents, "the demo has active incidents")
        tickets = structured(await c.call_tool("list_tickets", {}), "list_tickets")["tickets"]
        check(tickets, "the demo has open tickets")
        ticket = structured(await c.call_tool("get_ticket", {"ticket_id": tickets[0]["id"]}), "get_ticket")["ticket"]
        check(ticket.get("comments"), "get_ticket includes comments")
        spaces = structured(await c.call_tool("list_spaces", {"query": "board"}), "list_spaces")["spaces"]
        check(any(s["name"] == "Board Room" for s in spaces), "the Board Room is found")
        org = structured(await c.call_tool("get_organization_info", {}), "get_organization_info")
        check(org["organization"]["name"], "organization info has a name")
        health = structured(await c.call_tool("get_fleet_health", {}), "get_fleet_health")
        check(health["devices"]["total"] == 40, "fleet health counts the devices")
        structured(await c.call_tool("list_events", {}), "list_events")
        found = structured(await c.call_tool("search", {"query": "board room"}), "search")["results"]
        check(found, "search finds the board room")
        fetched = structured(await c.call_tool("fetch", {"id": found[0]["id"]}), "fetch")
        check(fetched["id"] == found[0]["id"], "fetch returns what search found")
        rooms = structured(await c.call_tool("list_rooms", {}), "list_rooms")["rooms"]
        board = next((r for r in rooms if r["name"] == "Board Room"), None)
        check(board and set(board["presets"]) >= {"start", "shutdown"} and board["devices"],
              f"the demo's Board Room has presets and devices: {board}")
        schedules = structured(await c.call_tool("list_schedules", {}), "list_schedules")["schedules"]
        check([s["name"] for s in schedules] == ["morning start", "evening shutdown"] and schedules[0]["room"] == "Board Room",
              f"the demo's schedules are listed: {schedules}")
        report = structured(await c.call_tool("get_device_analytics_report", {"device_id": device["id"], "period": "last_30_days"}),
                            "get_device_analytics_report")
        check(report["availability_pct"] is not None and "xyte_histories" in report["sources"],
              f"the analytics report computes availability from histories: {report}")
        catalogue = structured(await c.call_tool("xyte_endpoints_list", {}), "xyte_endpoints_list")
        check(catalogue["total"] >= 64, f"the endpoint catalogue covers the API: {catalogue['total']}")
        moves = structured(await c.call_tool("xyte_endpoints_list", {"search": "move device", "read_only": False}), "filtered list")
        check([e["key"] for e in moves["endpoints"]] == ["devices.move"], f"filters work: {moves['endpoints']}")
        described = structured(await c.call_tool("xyte_endpoint_describe", {"key": "devices.move"}), "describe")["endpoint"]
        check(described["path_params"] == ["device_id"] and described["required_role"] == "admin", f"describe: {described}")
        raw = structured(await c.call_tool("xyte_api_call", {"key": "devices.get", "path_params": {"device_id": device["id"]}}),
                         "xyte_api_call GET")
        check(raw["result"]["id"] == device["id"], "xyte_api_call reads a device from Xyte")

        alerts = structured(await c.call_tool("list_alerts", {}), "list_alerts")
        check(all(k in alerts for k in ("alerts", "silences", "rules", "channels", "deliveries", "errors")),
              f"list_alerts answers alerts, silences, rules, channels, deliveries and errors: {alerts}")
        silence = structured(await c.call_tool("silence_alerts", {"device": device["id"], "duration": "1h",
                                                                   "comment": "interop"}), "silence_alerts")["silence"]
        check(silence["id"].startswith("sil_") and silence["device"] == device["id"] and silence["comment"] == "interop",
              f"silence_alerts answers the silence: {silence}")

        dry = {
            "silence_alerts": {"device": device["id"], "duration": "2h", "dry_run": True},
            "end_silence": {"id": silence["id"], "dry_run": True},
            "send_command": {"device_id": device["id"], "command": "reboot", "dry_run": True},
            "update_ticket": {"ticket_id": tickets[0]["id"], "title": "Renamed", "dry_run": True},
            "mark_ticket_resolved": {"ticket_id": tickets[0]["id"], "dry_run": True},
            "send_ticket_message": {"ticket_id": tickets[0]["id"], "message": "on it", "dry_run": True},
            "close_incident": {"incident_id": incidents[0]["id"], "dry_run": True},
            "send_command_async": {"device_id": device["id"], "command": "reboot", "dry_run": True},
            "cancel_command": {"device_id": device["id"], "command_id": "some-command", "dry_run": True},
            "start_meeting_room_preset": {"room": "board room", "dry_run": True},
            "shutdown_meeting_room": {"room": "Board", "dry_run": True},
            "claim_device": {"name": "Spare display", "space_id": board["space_id"], "cloud_id": "cloud-1", "dry_run": True},
            "update_device": {"device_id": device["id"], "name": "Renamed", "dry_run": True},
            "delete_device": {"device_id": device["id"], "confirm": device["id"], "dry_run": True},
            "xyte_api_call": {"key": "devices.move", "path_params": {"device_id": device["id"]},
                              "body": {"space_id": board["space_id"]}, "dry_run": True},
            "pause_schedule": {"name": "morning start", "dry_run": True},
            "resume_schedule": {"name": "morning start", "dry_run": True},
            "run_schedule_now": {"name": "morning start", "dry_run": True},
        }
        for name, args in dry.items():
            out = structured(await c.call_tool(name, args), f"{name} dry run")
            check(out.get("dry_run") is True, f"{name} says it was a dry run")
        dry_preset = structured(await c.call_tool("start_meeting_room_preset", {"room": "board room", "dry_run": True}), "preset")
        check(dry_preset["room"] == "Board Room" and all(s["status"] == "validated" for s in dry_preset["steps"]),
              f"a preset dry run validates every step: {dry_preset}")
        for name, tool in tools.items():
            annotations = tool.annotations
            if annotations and annotations.read_only_hint:
                continue
            check(name == "set_context" or name in dry, f"{name} (mutating) has a dry run in this test")
        ended = structured(await c.call_tool("end_silence", {"id": silence["id"]}), "end_silence")
        check(ended["ended"] is True, f"end_silence ends it: {ended}")
        left = structured(await c.call_tool("list_alerts", {}), "list_alerts")["silences"]
        check(all(s["id"] != silence["id"] for s in left), f"an ended silence is no longer listed: {left}")
        ctx = structured(await c.call_tool("set_context", {"device_id": device["id"]}), "set_context")
        check(ctx["context"]["device_id"] == device["id"], "set_context stores the device")
        again = structured(await c.call_tool("get_device_status", {}), "get_device_status from context")
        check(again["device"]["id"] == device["id"], "tools fall back to the context")

        progress = []
        preset_note = ""

        async def on_progress(value, total, message):
            progress.append((value, message))

        sent = structured(await c.call_tool("send_command", {"device_id": device["id"], "command": "reboot", "wait": True,
                                                              "timeout_s": 30}, progress_callback=on_progress),
                          "send_command wait")
        check(sent["status"] in ("done", "failed"), f"the command finished: {sent}")
        check(len(progress) >= 2, f"progress was reported: {progress}")
        values = [v for v, _ in progress]
        check(values == sorted(values), f"progress increases: {values}")
        # A durable async command: acknowledged at once, delivered by the forwarder, followed to the device's answer.
        task = structured(await c.call_tool("send_command_async", {"device_id": device["id"], "command": "reboot"}),
                          "send_command_async")
        check(task["state"] == "queued" and task["task_id"].startswith("tsk_"), f"queued: {task}")
        with anyio.fail_after(30):
            while True:
                state = structured(await c.call_tool("get_task_status", {"task_id": task["task_id"]}), "get_task_status")
                if state["final"]:
                    break
                await anyio.sleep(0.5)
        check(state["state"] in ("done", "failed") and state["xyte_command_id"], f"the task reached Xyte's verdict: {state}")
        for name, tool in tools.items():
            if tool.annotations and tool.annotations.read_only_hint:
                check(name in called, f"read tool {name} was called with real data")

        # A room preset for real (once: it drives every device in the room), reporting progress per step.
        if mode == "legacy":
            progress.clear()
            ran = structured(await c.call_tool("start_meeting_room_preset", {"room": "board"}, progress_callback=on_progress),
                             "start_meeting_room_preset")
            steps = ran["steps"]
            check(ran["room"] == "Board Room" and steps, f"the preset ran: {ran}")
            check(all(s["status"] in ("done", "failed", "timed_out") and s.get("xyte_command_id") for s in steps),
                  f"every step was sent and followed to an answer: {steps}")
            check(len(progress) >= 2 * len(steps), f"progress per step ({len(steps)} steps): {progress}")
            check(ran["ok"] == all(s["ok"] for s in steps), "ok summarises the steps")
            preset_note = f", preset {len(steps)} steps ({[s['status'] for s in steps]})"

        # Resources: every static one and every template, instantiated with real ids.
        listed = [r.uri for r in (await c.list_resources()).resources]
        templates = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
        ids = {"device_id": device["id"], "ticket_id": tickets[0]["id"], "space_id": str(spaces[0]["id"]), "principal": "me"}
        uris = [str(u) for u in listed] + [re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], t) for t in templates]
        check(len(uris) >= 16, f"{mode_label}: the documented resources are offered ({len(uris)})")
        for uri in uris:
            read = await c.read_resource(uri)
            body = json.loads(read.contents[0].text)
            check(isinstance(body, dict) and body, f"{uri} has content")
        status = json.loads((await c.read_resource("edge://status")).contents[0].text)
        check(status["xyte"]["reachable"] is True and status["cache"]["devices"] == 40, f"edge status: {status}")

        prompts = {p.name: p for p in (await c.list_prompts()).prompts}
        check(set(prompts) >= {"reboot_device_workflow", "check_projectors_health", "proactive_projector_maintenance_check",
                               "troubleshoot_offline_device_workflow", "prepare_meeting_room"}, f"prompts: {list(prompts)}")
        got = await c.get_prompt("reboot_device_workflow", {"device_id": device["id"]})
        check(device["name"] in got.messages[0].content.text, "the reboot prompt names the device")
        got = await c.get_prompt("prepare_meeting_room", {"room": "Board Room"})
        check("Board Room" in got.messages[0].content.text, "the room prompt names the room")
        done = await c.complete(types.PromptReference(type="ref/prompt", name="prepare_meeting_room"), {"name": "room", "value": "boa"})
        check("Board Room" in done.completion.values, f"completion offers the Board Room: {done.completion.values}")
        done = await c.complete(types.PromptReference(type="ref/prompt", name="reboot_device_workflow"),
                                {"name": "device_id", "value": device["id"][:4]})
        check(device["id"] in done.completion.values, "completion offers device ids")

        # A subscription sees a device go offline at the simulator (through the poller and the event bus); it was
        # held online at the start of this exercise, so the simulator's own churn cannot have taken it offline first.
        uri = f"device://{target_device['id']}/status"
        if mode == "legacy":
            await c.subscribe_resource(uri)
            set_status(sim, target_device["id"], "offline")
            with anyio.fail_after(20):
                while uri not in updates:
                    await anyio.sleep(0.05)
        else:
            async with c.listen(resource_subscriptions=[uri]) as sub:
                set_status(sim, target_device["id"], "offline")
                with anyio.fail_after(20):
                    async for event in sub:
                        if getattr(event, "uri", None) == uri:
                            break
        set_status(sim, target_device["id"], "online")
        after = json.loads((await c.read_resource(uri)).contents[0].text)
        check(after["device"]["id"] == target_device["id"], "the updated resource reads back")
        print(f"{mode_label}: {len(tools)} tools, every read tool, {len(dry)} dry runs, send_command wait ({len(progress)} progress), "
              f"{len(uris)} resources, prompts, completion, subscription ok{preset_note}")


def main():
    with tempfile.TemporaryDirectory() as workdir:
        proc, socket, sim, https = start_daemon(workdir)
        try:
            for transport in os.environ.get("TRANSPORTS", "socket https").split():
                for mode in os.environ.get("MODES", "legacy auto 2026-07-28").split():
                    anyio.run(exercise, transport, mode, socket, sim, https)
            status = subprocess.run([BINARY, "status", "--socket", socket], capture_output=True, text=True, timeout=20)
            check(status.returncode == 0 and "reachable" in status.stdout and "40 devices" in status.stdout,
                  f"xyte-edge status: {status.stdout}{status.stderr}")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
        check(code == 0, f"the daemon exited 0 after SIGTERM, got {code}")
    print("python interop: all checks passed")


main()
