"""Measurement on a device reached through TVM's RPC tracker and servers (``tvm.rpc``).

The search stays here; a measurement asks the tracker for a free server
registered under a device key, uploads the compiled library, loads it there
and times it there with ``time_evaluator``; the figures (and the outputs)
come back. The tracker hands each session to one requester at a time, so a
device is never measured by two workers at once.

    device = RemoteDevice.parse("127.0.0.1:9190", "mybox")
    device.check()                                      # one clear line if unreachable or unknown
    timing, outputs = measure_remote(executable, arrays, device, num_threads=2)

Start the tracker and servers with ``hwnas rpc tracker`` and ``hwnas rpc
server`` (:func:`start_tracker`, :func:`start_server`); both bind 127.0.0.1
unless told otherwise: an RPC server runs whatever it is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError, RunError
from hwnas.ir.runtime import Timing, register_remote_functions, set_remote_num_threads, time_main
from hwnas.util import error_line, filtered_native_stderr

log = logging.getLogger(__name__)

#: the address ``hwnas rpc tracker`` and ``hwnas rpc server`` bind unless told otherwise
LOOPBACK = "127.0.0.1"
#: the tracker's default port (TVM's)
DEFAULT_TRACKER_PORT = 9190
#: seconds to reach the tracker, and to wait for a free device with the key
DEFAULT_TIMEOUT_S = 60.0


class RemoteError(RunError):
    """The tracker cannot be reached, or it has no free device with the key."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); :class:`InvalidConfigError` naming ``what`` otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidConfigError(f"{what} takes HOST:PORT, e.g. 127.0.0.1:{DEFAULT_TRACKER_PORT}, got {text!r}")
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int, timeout_s: float) -> None:
    """Open and close a TCP connection (TVM's own client retries refused connections for a minute)."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout_s, 0.1)):
            pass
    except OSError as exc:
        raise RemoteError(
            f"the RPC tracker at {host}:{port} cannot be reached ({exc.strerror or exc}); start one with "
            f"`hwnas rpc tracker --port {port}` or check --rpc-tracker") from None


@dataclasses.dataclass(frozen=True)
class RemoteDevice:
    """A device key at an RPC tracker, and how long to wait for the tracker and for a free device."""

    host: str
    port: int
    key: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key or ":" in self.key or " " in self.key:
            raise InvalidConfigError(f"an RPC device key is a non-empty word without ':' or spaces, got {self.key!r}")
        if not self.timeout_s > 0:
            raise InvalidConfigError(f"the RPC timeout must be > 0 seconds, got {self.timeout_s}")

    @classmethod
    def parse(cls, tracker: str, key: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> RemoteDevice:
        host, port = parse_address(tracker, "--rpc-tracker")
        if not key:
            raise InvalidConfigError("--rpc-tracker needs --rpc-key: the key the device's server registered with")
        return cls(host, port, key, float(timeout_s))

    @property
    def label(self) -> str:
        """How the store and reports name the device: ``rpc:KEY@HOST:PORT``."""
        return f"rpc:{self.key}@{self.host}:{self.port}"

    # -- the tracker --------------------------------------------------------------------------
    def _tracker(self):
        from tvm import rpc

        _reachable(self.host, self.port, min(self.timeout_s, 10.0))
        try:
            tracker = rpc.connect_tracker(self.host, self.port)
            tracker._sock.settimeout(min(self.timeout_s, 10.0))
            summary = tracker.summary()
        except Exception as exc:
            raise RemoteError(f"{self.host}:{self.port} does not answer as an RPC tracker: {error_line(exc)}") from None
        return tracker, summary

    def keys(self) -> dict[str, dict[str, int]]:
        """Device key -> {"servers", "free", "pending"} as the tracker reports them."""
        tracker, summary = self._tracker()
        tracker.close()
        return _keys(summary)

    def check(self) -> dict[str, int]:
        """The key's counts at the tracker; :class:`RemoteError` when unreachable or no server has the key."""
        keys = self.keys()
        if keys.get(self.key, {}).get("servers", 0) == 0:
            known = ", ".join(f"{k} ({v['servers']} server(s))" for k, v in sorted(keys.items()) if v["servers"])
            raise RemoteError(
                f"no RPC server is registered with key {self.key!r} at tracker {self.host}:{self.port} "
                f"(registered: {known or 'none'}); start one with `hwnas rpc server --tracker {self.host}:{self.port} "
                f"--key {self.key}`")
        return keys[self.key]

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """An RPC session with a free device of the key, held until the block ends."""
        tracker, summary = self._tracker()
        try:
            if _keys(summary).get(self.key, {}).get("servers", 0) == 0:
                tracker.close()
                self.check()  # the one-line error naming the registered keys
            tracker._sock.settimeout(self.timeout_s)
            t0 = time.monotonic()
            try:
                sess = tracker.request(self.key, priority=1, max_retry=1)
            except Exception as exc:
                if time.monotonic() - t0 >= self.timeout_s * 0.95:
                    raise RemoteError(
                        f"no free device with key {self.key!r} at tracker {self.host}:{self.port} within "
                        f"{self.timeout_s:g} s (all busy); start more servers with that key, use fewer workers, "
                        f"or raise --rpc-timeout") from None
                raise RemoteError(f"requesting a device with key {self.key!r} from {self.host}:{self.port} failed: "
                                  f"{error_line(exc)}") from None
        finally:
            tracker.close()
        yield sess

    def device_info(self) -> dict[str, str]:
        """The remote's LLVM CPU name and target triple (when its TVM has LLVM), to compile for it."""
        info = {}
        with self.session() as sess:
            for name, func in (("mcpu", "target.llvm_get_system_cpu"), ("mtriple", "target.llvm_get_system_triple")):
                try:
                    info[name] = str(sess.get_function(func)())
                except Exception:  # a runtime-only TVM on the device has no LLVM
                    log.info("the device has no %s; compiling for this machine's", func)
        return info


def _keys(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for item in summary.get("server_info", []):
        key = str(item.get("key", "")).partition(":")[2]  # "server:KEY"
        out.setdefault(key, {"servers": 0, "free": 0, "pending": 0})["servers"] += 1
    for key, q in summary.get("queue_info", {}).items():
        entry = out.setdefault(key, {"servers": 0, "free": 0, "pending": 0})
        entry["free"], entry["pending"] = int(q.get("free", 0)), int(q.get("pending", 0))
    return out


def measure_remote(
    executable,
    arrays: list[np.ndarray],
    device: RemoteDevice,
    *,
    num_threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    min_repeat_ms: float = 20.0,
) -> tuple[Timing, list[np.ndarray]]:
    """Upload ``executable`` to a device of ``device``'s key, run ``main`` once (its outputs come back)
    and time it there as :func:`hwnas.ir.runtime.measure_vm` does here."""
    from tvm import relax

    if repeats < 1:
        raise RunError(f"repeats must be >= 1, got {repeats}")
    with tempfile.TemporaryDirectory(prefix="hwnas-rpc-") as tmp:
        lib = Path(tmp) / "model.so"
        with filtered_native_stderr():
            executable.export_library(str(lib))
        with device.session() as sess:
            try:
                sess.upload(str(lib))
                module = sess.load_module(lib.name)
                dev = sess.cpu()
                if num_threads:
                    set_remote_num_threads(sess, int(num_threads))
                import tvm

                vm = relax.VirtualMachine(module, dev)
                args = [tvm.runtime.tensor(a, dev) for a in arrays]
                out = vm["main"](*args)
                outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
                outputs = [o.numpy() for o in outs]  # that run was the first warm-up
                timing = time_main(vm, args, dev, warmup=max(warmup, 1) - 1, repeats=repeats,
                                   min_repeat_ms=min_repeat_ms)
            except RemoteError:
                raise
            except Exception as exc:
                raise RunError(f"measuring on {device.label} failed: {error_line(exc)}") from None
    return timing, outputs


# ---------------------------------------------------------------------------------------------
# the tracker and servers (``hwnas rpc tracker`` / ``hwnas rpc server``)


def _free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as exc:
            raise InvalidConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                                     f"or --host") from None


def start_tracker(host: str = LOOPBACK, port: int = DEFAULT_TRACKER_PORT):
    """Start TVM's tracker on exactly ``host:port`` (in a child process); the ``tvm.rpc.Tracker``."""
    from tvm.rpc.tracker import Tracker

    _free(host, port)
    return Tracker(host, port=port, port_end=port + 1, silent=True)


def start_server(tracker: str, key: str, *, host: str = LOOPBACK, port: int = 9090, timeout_s: float = 10.0):
    """Start TVM's RPC server on ``host:port`` registered at ``tracker`` under ``key``; the ``tvm.rpc.Server``."""
    from tvm import rpc

    thost, tport = parse_address(tracker, "--tracker")
    RemoteDevice(thost, tport, key)  # checks the key
    _reachable(thost, tport, timeout_s)
    _free(host, port)
    return rpc.Server(host, port, port + 1, tracker_addr=(thost, tport), key=key, silent=True,
                      server_init_callback=register_remote_functions)
