# Unit tests of what the driver reads of bothnia's store (no etcd, no
# Neutron): run by ml2/driver_linux_test.go with Debian's python3.

import json
import unittest

from bothnia_ml2 import fabric


class FabricTest(unittest.TestCase):

    def test_segments(self):
        kvs = {
            '/bothnia/v1/networks/mgmt': 'name: mgmt\nproject: mosler\nsegment: 1203\n',
            '/bothnia/v1/networks/sandbox': 'name: sandbox\nsegment: 1204\n',
            '/bothnia/v1/networks/broken': 'segment: [\n',
            '/bothnia/v1/ports/mgmt/vm1': 'segment: 9\n',
        }
        self.assertEqual(fabric.segments(kvs), {1203, 1204})

    def test_nodes(self):
        kvs = {
            '/bothnia/v1/status/knox-c1': json.dumps({'node': 'knox-c1', 'ready': True}),
            '/bothnia/v1/status/knox-c2': json.dumps({'node': 'knox-c2', 'ready': False}),
            '/bothnia/v1/status/knox-c1/up/p1': 'tapp1',
            '/bothnia/v1/status/knox-c2/up/p2': 'tapp2',
            '/bothnia/v1/status/knox-c3': 'not json',
            # An agent stopped: its status key went with its lease, its
            # ports' keys stayed.
            '/bothnia/v1/status/knox-c4/up/p4': 'tapp4',
        }
        alive, up = fabric.nodes(kvs)
        self.assertEqual(alive, {'knox-c1'})
        self.assertEqual(up, {'knox-c1': {'p1'}, 'knox-c2': {'p2'}})

    def test_node_of(self):
        names = {'knox-c1', 'knox-c2'}
        self.assertEqual(fabric.node_of('knox-c1', names), 'knox-c1')
        self.assertEqual(fabric.node_of('knox-c1.example.org', names), 'knox-c1')
        self.assertIsNone(fabric.node_of('epouta-c1', names))


if __name__ == '__main__':
    unittest.main()
