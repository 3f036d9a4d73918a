"""Serve the bare Git repositories under a directory over Git's smart HTTP protocol.

    python hack/git-http.py --root DIR [--port N]

Listens on 127.0.0.1 only and prints ``listening on http://127.0.0.1:PORT`` once it accepts
connections (``--port 0`` picks a free port). ``git clone http://127.0.0.1:PORT/NAME.git`` clones
``DIR/NAME.git``; pushes are accepted from anyone who can reach that address.

Git does all of Git's work: each request is handed to ``git http-backend`` as a CGI script, and
this module only bridges HTTP and CGI. aiohttp has already undone any chunked transfer and
gzip content encoding of the request, so the backend reads a plain body until its end.
"""

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from aiohttp import web

# Requests whose headers Git's HTTP protocol needs passed on to the CGI script.
_FORWARDED = {"Content-Type": "CONTENT_TYPE", "Git-Protocol": "GIT_PROTOCOL"}


def cgi_environment(request: web.Request, root: Path) -> dict[str, str]:
    """The environment ``git http-backend`` runs in for ``request`` (RFC 3875 and git-http-backend(1))."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        # Pushes are allowed without authentication: the server listens on the loopback interface only.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "true",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query_string,
        "REMOTE_ADDR": request.remote or "",
    }
    env.update({var: request.headers[name] for name, var in _FORWARDED.items() if name in request.headers})
    return env


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """Copy the decoded request body to the backend, then close its input."""
    try:
        async for chunk in request.content.iter_any():
            stdin.write(chunk)
            await stdin.drain()
    finally:
        stdin.close()


async def backend(request: web.Request) -> web.StreamResponse:
    """Answer ``request`` with what ``git http-backend`` writes: CGI headers, then the body, streamed."""
    process = await asyncio.create_subprocess_exec(
        "git", "http-backend",
        env=cgi_environment(request, request.app["root"]),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    feeding = asyncio.create_task(_feed(request, process.stdin))
    status, headers = 200, {}
    while line := (await process.stdout.readline()).rstrip(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers[name.strip()] = value.strip()
    response = web.StreamResponse(status=status, headers=headers)
    try:
        await response.prepare(request)
        while chunk := await process.stdout.read(65536):
            await response.write(chunk)
        await feeding
        await process.wait()
        # go-git closes the connection once it has read Git's last packet, before the end of the chunked body.
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
    finally:
        if process.returncode is None:  # the client went away before the backend was done
            feeding.cancel()
            process.kill()
            await process.wait()
    return response


def application(root: Path) -> web.Application:
    """The aiohttp application that serves every bare repository under ``root``."""
    app = web.Application(client_max_size=0)
    app["root"] = root.resolve()
    app.router.add_route("*", "/{path:.*}", backend)
    return app


async def serve(root: Path, port: int) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` until cancelled."""
    runner = web.AppRunner(application(root), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory of bare repositories (NAME.git)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.root, args.port))


if __name__ == "__main__":
    main(sys.argv[1:])
