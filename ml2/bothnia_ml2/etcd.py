# A small client of etcd's JSON gateway (the /v3/kv/range endpoint every
# etcd v3 member serves over HTTP): the driver reads a few prefixes and
# needs nothing else, so it brings no etcd library into neutron-server.

import base64
import json
import urllib.error
import urllib.request


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def _prefix_end(prefix):
    b = bytearray(prefix.encode())
    for i in reversed(range(len(b))):
        if b[i] < 0xff:
            b[i] += 1
            return base64.b64encode(bytes(b[:i + 1])).decode()
    return _b64("\0")


class Client(object):
    """Reads keys from the first of the endpoints that answers."""

    def __init__(self, endpoints, timeout=2.0):
        self.endpoints = [e.rstrip('/') for e in endpoints]
        self.timeout = timeout

    def get_prefix(self, prefix):
        """Returns {key: value} of every key under prefix, as str."""
        body = json.dumps({'key': _b64(prefix),
                           'range_end': _prefix_end(prefix)}).encode()
        last = None
        for ep in self.endpoints:
            req = urllib.request.Request(ep + '/v3/kv/range', data=body,
                                         headers={'Content-Type': 'application/json'})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = json.loads(resp.read().decode())
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
                continue
            out = {}
            for kv in data.get('kvs', []):
                k = base64.b64decode(kv['key']).decode()
                v = base64.b64decode(kv.get('value', '')).decode()
                out[k] = v
            return out
        raise IOError('etcd %s: %s' % (', '.join(self.endpoints), last))
