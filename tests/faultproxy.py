"""A TCP relay on 127.0.0.1 that cuts connections after N bytes from the server: a source that drops mid-FETCH."""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int = 1):
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut_count = 0
        self._lock = threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._srv.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            up = socket.create_connection(self.upstream, timeout=10)
            with self._lock:
                cut = self.cuts_left > 0
                self.cuts_left -= int(cut)
            threading.Thread(target=self._pump, args=(client, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, self.cut_after if cut else None),
                             daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = a.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    b.sendall(data[: limit - sent])
                    with self._lock:
                        self.cut_count += 1
                    break
                b.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
