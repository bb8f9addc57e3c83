"""A minimal RESP2 client for inkdeploy's Redis and Sentinel modules (module_utils).

The modules in roles/redis and roles/redis_sentinel speak to redis-server and redis-sentinel
directly, so they need no redis-py on the hosts. With TLS on (roles/redis redis_tls), they
verify the server against the internal Redis CA, as every other client does.
"""

import socket
import ssl


class RedisError(Exception):
    """An error reply or a broken connection."""


class Connection:
    """The smallest RESP2 client that does the job."""

    def __init__(self, host, port, timeout=5.0, ssl_context=None, ca_file=None):
        """A connection to HOST:PORT; over TLS when given SSL_CONTEXT or CA_FILE (the CA that
        signed the server's certificate, which must name HOST)."""
        if ssl_context is None and ca_file:
            ssl_context = ssl.create_default_context(cafile=ca_file)
        sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            except (OSError, ssl.SSLError):
                sock.close()
                raise
        self.sock = sock
        self.buf = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.buf.readline()
        if not line:
            raise RedisError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.buf.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RedisError(f"unexpected reply {line!r}")

    def close(self):
        self.buf.close()
        self.sock.close()
