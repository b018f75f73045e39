"""A TCP proxy on loopback that a test can cut: in front of the S3 server, it plays a network
outage (connections reset, new ones refused) without losing the server's in-memory objects."""
import socket
import struct
import threading


class CuttableProxy:
    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.cut_after = None          # cut everything once one connection uploads this many bytes
        self.cuts = 0
        self.refused = 0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut_when_uploading(self, nbytes: int) -> None:
        self.cut_after = nbytes

    def cut(self) -> None:
        with self._lock:
            self.up = False
            self.cuts += 1
            for c in list(self._conns):
                _reset(c)
            self._conns.clear()

    def restore(self) -> None:
        with self._lock:
            self.up, self.cut_after = True, None

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.up:
                    self.refused += 1
                    _reset(client)
                    continue
                try:
                    server = socket.create_connection(self.upstream)
                except OSError:
                    _reset(client)
                    continue
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if upload and self.cut_after is not None and sent > self.cut_after:
                    self.cut()          # mid-upload: this connection and every other one
                    return
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._conns -= {src, dst}
            src.close()


def _reset(sock: socket.socket) -> None:
    """Close with a RST, as a vanished peer does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
