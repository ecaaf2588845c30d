# What the driver reads of bothnia's store (store/store.go's layout):
#
#   /bothnia/v1/networks/<name>           YAML of a fabric network: its segment
#   /bothnia/v1/status/<node>             JSON of the node's agent, under a
#                                         lease: gone when the agent is
#   /bothnia/v1/status/<node>/up/<port>   the port is up on the node: its tap
#                                         is in its bridge, its rules are in
#
# Pure functions of what was read, so they are tested without etcd.

import json

import yaml

PREFIX = '/bothnia/v1/'
NETWORKS = PREFIX + 'networks/'
STATUS = PREFIX + 'status/'


def segments(kvs):
    """The fabric's segments (VLAN IDs) from the networks' keys."""
    out = set()
    for k, v in kvs.items():
        if not k.startswith(NETWORKS):
            continue
        try:
            n = yaml.safe_load(v) or {}
        except yaml.YAMLError:
            continue
        seg = n.get('segment')
        if isinstance(seg, int):
            out.add(seg)
    return out


def nodes(kvs):
    """(alive, up): the nodes whose agent reports ready, and each node's
    ports that are up, from the status keys. A node's ports count only
    while its agent's status key is there: the up keys have no lease (an
    agent that restarts rewrites nothing), so a stopped agent's stay
    behind, and its host may have been handed back to Neutron's agent."""
    alive, present, up = set(), set(), {}
    for k, v in kvs.items():
        if not k.startswith(STATUS):
            continue
        rest = k[len(STATUS):].split('/')
        if len(rest) == 1:
            try:
                st = json.loads(v)
            except ValueError:
                continue
            present.add(rest[0])
            if st.get('ready'):
                alive.add(rest[0])
        elif len(rest) == 3 and rest[1] == 'up':
            up.setdefault(rest[0], set()).add(rest[2])
    return alive, {n: ports for n, ports in up.items() if n in present}


def node_of(host, names):
    """The bothnia node a Neutron host is: the name itself, or its first
    label (knox-c1.example.org is knox-c1), as openstack import maps
    binding:host_id; None if neither is a node."""
    if host in names:
        return host
    first = host.split('.')[0]
    if first in names:
        return first
    return None
