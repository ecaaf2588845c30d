# bothnia's ML2 mechanism driver: Neutron learns about bothnia's hosts.
#
# On a host where bothnia's agent runs, the fabric's networks (their VLAN
# segments on the fabric's physical network) are bothnia's: its bridge,
# uplink and security groups. This driver binds the ports of those
# networks on such hosts, as vif_type "tap" (Nova makes the tap, bothnia's
# agent plugs it), and leaves every other port to the drivers after it
# (list it before linuxbridge). Like Neutron's own agent drivers, it puts
# an L2 provisioning block on a port that is bound to a host, and clears
# it when bothnia's agent reports the port up in the store: only then
# does the port go ACTIVE and Nova get network-vif-plugged.
#
# A host is alive while its agent's status key is in the store: the agent
# keeps it under a lease, so a dead agent's host gets no binding from this
# driver, as Neutron gives none for its own dead agents. Everything is read
# from etcd (bothnia's store) through its JSON gateway; nothing is kept
# that a restart of either side would lose: a block still pending when
# neutron-server restarts is cleared by the next poll.

import time

from neutron_lib.api.definitions import portbindings
from neutron_lib.callbacks import events
from neutron_lib.callbacks import registry
from neutron_lib.callbacks import resources
from neutron_lib import constants as const
from neutron_lib import context as n_context
from neutron_lib.db import api as db_api
from neutron_lib.plugins import directory
from neutron_lib.plugins.ml2 import api
from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import loopingcall

from neutron.db import models_v2
from neutron.db import provisioning_blocks
from neutron.db.models import provisioning_block as pb_model
from neutron.plugins.ml2 import models as ml2_models

from bothnia_ml2 import etcd
from bothnia_ml2 import fabric

LOG = logging.getLogger(__name__)

DRIVER = 'bothnia'
VIF_TYPE = portbindings.VIF_TYPE_TAP

OPTS = [
    cfg.ListOpt('etcd_endpoints', default=['http://127.0.0.1:2379'],
                help="bothnia's store: etcd client URLs (HTTP), tried in order"),
    cfg.StrOpt('physical_network', default='physnet1',
               help="The physical network the fabric's VLAN segments are on"),
    cfg.FloatOpt('poll_interval', default=0.5,
                 help='Seconds between reads of the ports bothnia reports up'),
    cfg.FloatOpt('cache_seconds', default=1.0,
                 help='How long a read of the store answers bindings'),
]
cfg.CONF.register_opts(OPTS, 'ml2_bothnia')


class BothniaMechanismDriver(api.MechanismDriver):

    def initialize(self):
        conf = cfg.CONF.ml2_bothnia
        self.store = etcd.Client(conf.etcd_endpoints)
        self.physnet = conf.physical_network
        self._read_at, self._kvs = 0, None
        self._poller = None
        # Each neutron-server process (API and RPC workers) polls after it
        # forked, as OVN's driver starts its connections.
        registry.subscribe(self._start_polling, resources.PROCESS, events.AFTER_INIT)

    # What the store says, read at most every cache_seconds.
    def _read(self):
        now = time.monotonic()
        if self._kvs is None or now - self._read_at > cfg.CONF.ml2_bothnia.cache_seconds:
            kvs = self.store.get_prefix(fabric.NETWORKS)
            kvs.update(self.store.get_prefix(fabric.STATUS))
            self._kvs, self._read_at = kvs, now
        return self._kvs

    def _fabric_segment(self, segment):
        return (segment.get(api.NETWORK_TYPE) == const.TYPE_VLAN and
                segment.get(api.PHYSICAL_NETWORK) == self.physnet and
                segment.get(api.SEGMENTATION_ID) in fabric.segments(self._read()))

    def _node(self, host):
        """The live bothnia node a host is, or None."""
        if not host:
            return None
        try:
            alive, _ = fabric.nodes(self._read())
        except IOError as e:
            LOG.warning('bothnia: store unreachable, binding nothing: %s', e)
            return None
        return fabric.node_of(host, alive)

    def _ours(self, context):
        """The port is on a fabric segment and its host runs bothnia."""
        try:
            segs = context.network.network_segments
            fab = any(self._fabric_segment(s) for s in segs)
        except IOError as e:
            LOG.warning('bothnia: store unreachable: %s', e)
            return False
        return fab and self._node(context.host) is not None

    def create_port_precommit(self, context):
        self._block(context)

    def update_port_precommit(self, context):
        if context.host != context.original_host:
            self._block(context)

    def _block(self, context):
        # As the agent drivers do: the port waits for its host's wiring.
        # The entity is the L2 agent's, which bothnia's agent stands for.
        port = context.current
        if not context.host or port['status'] == const.PORT_STATUS_ACTIVE:
            return
        if port.get(portbindings.VNIC_TYPE, portbindings.VNIC_NORMAL) != portbindings.VNIC_NORMAL:
            return
        if port['device_owner'].startswith('network:'):
            return
        if self._ours(context):
            provisioning_blocks.add_provisioning_component(
                context._plugin_context, port['id'], resources.PORT,
                provisioning_blocks.L2_AGENT_ENTITY)

    def bind_port(self, context):
        port = context.current
        if port.get(portbindings.VNIC_TYPE, portbindings.VNIC_NORMAL) != portbindings.VNIC_NORMAL:
            return
        node = self._node(context.host)
        if node is None:
            LOG.debug('bothnia: host %s runs no live bothnia agent; port %s left to the other drivers',
                      context.host, port['id'])
            return
        for segment in context.segments_to_bind:
            try:
                ours = self._fabric_segment(segment)
            except IOError as e:
                LOG.warning('bothnia: store unreachable: %s', e)
                return
            if ours:
                context.set_binding(segment[api.ID], VIF_TYPE,
                                    {portbindings.CAP_PORT_FILTER: True},
                                    status=const.PORT_STATUS_DOWN)
                LOG.info('bothnia: bound port %s on node %s, segment %s',
                         port['id'], node, segment[api.SEGMENTATION_ID])
                return

    # Clearing the blocks of the ports bothnia reports up.
    def _start_polling(self, resource, event, trigger, payload=None):
        if self._poller is not None:
            return
        self._poller = loopingcall.FixedIntervalLoopingCall(self._poll)
        self._poller.start(interval=cfg.CONF.ml2_bothnia.poll_interval, stop_on_exception=False)

    def _poll(self):
        try:
            kvs = self.store.get_prefix(fabric.STATUS)
        except IOError as e:
            LOG.debug('bothnia: store unreachable: %s', e)
            return
        _, up = fabric.nodes(kvs)
        ctx = n_context.get_admin_context()
        for port_id, host in self._blocked_ports(ctx):
            node = fabric.node_of(host, up.keys())
            if node is not None and port_id in up.get(node, ()):
                LOG.info('bothnia: port %s is up on node %s', port_id, node)
                provisioning_blocks.provisioning_complete(
                    ctx, port_id, resources.PORT,
                    provisioning_blocks.L2_AGENT_ENTITY)
        # A port of bothnia's that is up, no longer blocked, but not
        # ACTIVE: another host agent (a linuxbridge agent sharing the
        # host, which sees the tap and cannot wire it) reported it down.
        # bothnia's agent is the one that wires it: its word stands.
        for port_id, host in self._down_ports(ctx):
            node = fabric.node_of(host, up.keys())
            if node is not None and port_id in up.get(node, ()):
                LOG.info('bothnia: port %s is up on node %s but was reported down; ACTIVE again', port_id, node)
                directory.get_plugin().update_port_status(ctx, port_id, const.PORT_STATUS_ACTIVE, host)

    @staticmethod
    def _down_ports(ctx):
        """(port id, host) of every port this driver bound that is not
        ACTIVE and has no provisioning block left."""
        with db_api.CONTEXT_READER.using(ctx):
            blocked = (ctx.session.query(pb_model.ProvisioningBlock.standard_attr_id)
                       .filter(pb_model.ProvisioningBlock.standard_attr_id == models_v2.Port.standard_attr_id)
                       .exists())
            q = (ctx.session.query(models_v2.Port.id, ml2_models.PortBindingLevel.host)
                 .join(ml2_models.PortBindingLevel,
                       ml2_models.PortBindingLevel.port_id == models_v2.Port.id)
                 .filter(ml2_models.PortBindingLevel.driver == DRIVER)
                 .filter(models_v2.Port.status != const.PORT_STATUS_ACTIVE)
                 .filter(~blocked))
            return list(q)

    @staticmethod
    def _blocked_ports(ctx):
        """(port id, host) of every port this driver bound that still has
        an L2 provisioning block: a few rows, whatever the cloud's size."""
        with db_api.CONTEXT_READER.using(ctx):
            q = (ctx.session.query(models_v2.Port.id, ml2_models.PortBindingLevel.host)
                 .join(pb_model.ProvisioningBlock,
                       pb_model.ProvisioningBlock.standard_attr_id == models_v2.Port.standard_attr_id)
                 .join(ml2_models.PortBindingLevel,
                       ml2_models.PortBindingLevel.port_id == models_v2.Port.id)
                 .filter(pb_model.ProvisioningBlock.entity == provisioning_blocks.L2_AGENT_ENTITY)
                 .filter(ml2_models.PortBindingLevel.driver == DRIVER))
            return list(q)
