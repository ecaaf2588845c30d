package lab

// The failover benchmark's peer: router replicas as Neutron's L3 HA runs
// them, keepalived's VRRP choosing the serving one, no connection state
// synchronised.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bothnia/bothnia/node"
)

// keepalived is a replica's keepalived, in its router namespace: one VRRP
// instance on the replicas' ha link as Neutron's L3 agent writes it (Zed:
// neutron/agent/l3/ha_router.py makes every replica's instance BACKUP
// with nopreempt; neutron/agent/linux/keepalived.py, priority 50;
// neutron/conf/agent/l3/ha.py, advert_int 2 s). Neutron also puts a VIP
// on the HA port; here the ha link is bothnia's, whose applier would take
// a foreign address off it, so the instance has none: its notify_master
// writes this node into the store's election key, which the agents follow.
func (l *Lab) keepalived(nodeName, ns string, sv node.Service) service {
	dir := filepath.Join(l.stateDir(), "keepalived-"+nodeName)
	exe := Exe
	if exe == "" {
		exe, _ = os.Executable()
	}
	claim := fmt.Sprintf("%s router claim --node %s --etcd-endpoints %s", exe, nodeName, strings.Join(l.EtcdEndpoints(), ","))
	conf := fmt.Sprintf(`global_defs {
    router_id bothnia-%s
    script_user root
}
vrrp_instance VR_1 {
    state BACKUP
    interface %s
    virtual_router_id 1
    priority 50
    nopreempt
    advert_int 2
    notify_master "%s"
}
`, nodeName, sv.Iface, claim)
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, "keepalived.conf"), []byte(conf), 0o644)
	return service{name: "keepalived-" + nodeName, ns: ns, bin: "keepalived", args: []string{
		"--dont-fork", "--log-console", "--log-detail", "--vrrp",
		"-f", filepath.Join(dir, "keepalived.conf"),
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid"),
	}}
}
