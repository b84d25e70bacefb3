"""A stand-in for the embedded model server: same start-up protocol, canned answers, no model.

Run as ``python embedded_fake_server.py --mode MODE``; modes:
ok (serve), fail (exit 3 after writing to stderr), silent (never announce),
unhealthy (announce but answer 503 on /health), garbage (announce something that is not JSON),
remote (announce a non-loopback address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from pipeline.llm.embedded import watch_parent  # noqa: E402


async def health(request: web.Request) -> web.Response:
    """Answer /health according to the mode."""
    status = 503 if request.app["mode"] == "unhealthy" else 200
    return web.json_response({"status": "ok" if status == 200 else "loading"}, status=status)


async def chat(request: web.Request) -> web.Response:
    """Answer a chat completion with a fixed summary; with --bodies, append the request to that file."""
    body = await request.json()
    if request.app["bodies"]:
        with open(request.app["bodies"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(body) + "\n")
    return web.json_response({
        "id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "FAKE SUMMARY"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    })


async def main(mode: str, pid_file: str | None, bodies: str | None = None) -> None:
    """Serve on 127.0.0.1 with a free port until the parent closes stdin."""
    if pid_file:
        Path(pid_file).write_text("ready")
    if mode == "fail":
        sys.stderr.write("error: could not load model: fake failure\n")
        sys.stderr.flush()
        sys.exit(3)
    if mode == "silent":
        await asyncio.sleep(3600)
    app = web.Application()
    app["mode"] = mode
    app["bodies"] = bodies
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = {"garbage": None, "remote": "http://10.0.0.1:9"}.get(mode, f"http://127.0.0.1:{port}")
    sys.stdout.write((json.dumps({"url": url}) if url else "loading model...") + "\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--pid-file")
    parser.add_argument("--bodies")
    args = parser.parse_args()
    watch_parent()
    asyncio.run(main(args.mode, args.pid_file, args.bodies))
