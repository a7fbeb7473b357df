"""Running the simulator: in a background thread (tests, ``run --simulate``) or blocking (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from pipeline.errors import UsageError
from pipeline.shell.eventloop import run_loop
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.server import Simulator
from pipeline.simulator.tasks import Ledger

_STARTUP_TIMEOUT = 30.0


def _quiet_aiohttp() -> None:
    # Without a handler, Python's last-resort handler would print aiohttp's internal
    # errors (with tracebacks) to stderr; callers that configure logging still get them.
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _start(sim: Simulator) -> web.AppRunner:
    """Bind and start serving; sets ``sim.port`` to the real port."""
    _quiet_aiohttp()
    runner = web.AppRunner(sim.app(), access_log=None, handle_signals=False)
    await runner.setup()
    config = sim.config
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        hint = "pick another --port, or --port 0 for a free one"
        raise UsageError(
            f"cannot listen on {config.host}:{config.port}: {err.strerror}; {hint}"
        ) from err
    sim.port = runner.addresses[0][1]
    return runner


class RunningSimulator:
    """A simulator serving from a background thread; stop it with :meth:`stop` or ``with``."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._sim = Simulator(config)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._failure: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="imgspec-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_STARTUP_TIMEOUT):
            raise UsageError("the simulator did not start within 30 s")
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    @property
    def port(self) -> int:
        """The port the simulator listens on."""
        return self._sim.port

    @property
    def base_url(self) -> str:
        """``http://host:port``: the origin to use instead of ``https://api.apimart.ai``."""
        return _base_url(self.config.host, self._sim.port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()
            self._stopped.set()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        try:
            runner = await _start(self._sim)
        except BaseException as err:
            self._sim.close()
            self._failure = err
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await runner.cleanup()
            self._sim.close()

    def ledger(self) -> Ledger:
        """A snapshot of the billing ledger, taken in the simulator's thread."""

        async def snapshot() -> Ledger:
            return self._sim.ledger()

        if self._stopped.is_set():
            return self._sim.ledger()  # the loop is gone, so no request can race with us
        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(_STARTUP_TIMEOUT)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end. Calling it twice is harmless."""
        if not self._stopped.is_set() and self._stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(_STARTUP_TIMEOUT)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(config: SimulatorConfig | None = None) -> RunningSimulator:
    """Start a simulator in a background thread; returns once it is listening.

    Use as ``with run_in_thread(config) as sim: ... sim.base_url ...``.
    Raises UsageError if it cannot listen (e.g. the port is taken).
    """
    return RunningSimulator(config or SimulatorConfig())


def serve(config: SimulatorConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM (blocking); ``on_ready`` gets the base URL once listening.

    Ctrl-C surfaces as KeyboardInterrupt after a clean shutdown; SIGTERM returns normally.
    """
    run_loop(_serve(config, on_ready))


async def _serve(config: SimulatorConfig, on_ready: Callable[[str], None] | None) -> None:
    sim = Simulator(config)
    try:
        runner = await _start(sim)
    except BaseException:
        sim.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Only possible in the main thread on Unix; elsewhere Ctrl-C still works.
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        if on_ready is not None:
            on_ready(_base_url(config.host, sim.port))
        await stop.wait()
    finally:
        await runner.cleanup()
        sim.close()
