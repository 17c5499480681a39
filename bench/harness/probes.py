"""Plain HTTP on loopback: a free port, the multipart form of a photo, one-shot requests."""

import http.client
import socket
import uuid

from .common import PROBE_PHOTO, VAR


def free_port():
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(photo):
    """(body, content type) of a multipart form with the photo in field `image`."""
    boundary = uuid.uuid4().hex
    data = (VAR / "photos" / photo).read_bytes()
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{photo}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Probe:
    """Posts one photo to /model_predict; one fresh connection per request."""

    def __init__(self, port, photo=PROBE_PHOTO):
        self.port = port
        self.body, self.ctype = multipart(photo)

    def post(self, timeout=60.0):
        """(status or None on a connection error, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                "/model_predict",
                body=self.body,
                headers={"Content-Type": self.ctype, "Connection": "close"},
            )
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        except (OSError, http.client.HTTPException):
            return None, {}, b""
        finally:
            conn.close()


def http_get(port, path, timeout=10.0):
    """(status, body) of a GET, (None, b"") on a connection error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        conn.close()
