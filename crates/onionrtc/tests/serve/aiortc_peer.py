"""A third-party WebRTC peer for the interop test (tests/serve/call.rs):
aiortc (Debian's python3-aiortc) joins a room of `onionrtc serve` by the
protocol of docs/signaling.md, sends a WAV file, records what it hears to a
WAV file, and leaves with `bye` after SECONDS once connected.

usage: aiortc_peer.py WS_URL ROOM SEND_WAV RECORD_WAV SECONDS
Prints one JSON line: {"state": ..., "iceServers": n}.
"""

import asyncio
import json
import sys

import websockets
from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.contrib.media import MediaPlayer, MediaRecorder
from aiortc.sdp import candidate_from_sdp


async def main(ws_url, room, send_wav, record_wav, seconds):
    state = "new"
    result = "new"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "join", "room": room}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if msg.get("type") == "joined":
                break
            if msg.get("type") == "error":
                raise SystemExit(f"join refused: {msg}")
        servers = [
            RTCIceServer(urls=[u for u in s["urls"] if "transport=udp" in u],
                         username=s["username"], credential=s["credential"])
            for s in msg["iceServers"]
        ]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        player = MediaPlayer(send_wav, loop=True)
        pc.addTrack(player.audio)
        recorder = MediaRecorder(record_wav)
        connected = asyncio.Event()

        @pc.on("track")
        def on_track(track):
            recorder.addTrack(track)

        @pc.on("connectionstatechange")
        async def on_state():
            nonlocal state
            state = pc.connectionState
            if state == "connected":
                connected.set()

        async def send_local(kind):
            desc = pc.localDescription
            await ws.send(json.dumps({"type": kind, "sdp": desc.sdp}))

        if msg.get("initiator"):
            await pc.setLocalDescription(await pc.createOffer())
            await send_local("offer")

        async def signaling():
            async for raw in ws:
                m = json.loads(raw)
                t = m.get("type")
                if t == "offer":
                    await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
                    await send_local("answer")
                elif t == "answer":
                    await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "answer"))
                elif t == "candidate" and m.get("candidate"):
                    c = m["candidate"]
                    line = c["candidate"].split(":", 1)[1]
                    cand = candidate_from_sdp(line)
                    cand.sdpMid = c.get("sdpMid")
                    cand.sdpMLineIndex = c.get("sdpMLineIndex")
                    await pc.addIceCandidate(cand)
                elif t == "peer-left":
                    return

        task = asyncio.ensure_future(signaling())
        try:
            await asyncio.wait_for(connected.wait(), 30)
            await recorder.start()
            await asyncio.sleep(seconds)
            await recorder.stop()
            result = "connected"
        except asyncio.TimeoutError:
            result = f"not connected ({pc.connectionState})"
        await ws.send(json.dumps({"type": "bye"}))
        task.cancel()
        await pc.close()
    print(json.dumps({"state": result, "last": state, "iceServers": len(servers)}), flush=True)


if __name__ == "__main__":
    ws_url, room, send_wav, record_wav, seconds = sys.argv[1:6]
    asyncio.run(main(ws_url, room, send_wav, record_wav, float(seconds)))
