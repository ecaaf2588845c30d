package agent

import (
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bothnia/bothnia/firewall"
)

// metrics are what an operator graphs of an agent.
type metrics struct {
	converge prometheus.Histogram // seconds per converge
	changes  prometheus.Counter   // kernel changes written
	repairs  prometheus.Counter   // drift found and repaired by the read-back
	revoked  prometheus.Counter   // conntrack entries deleted
	failures prometheus.Counter
	ports    prometheus.Gauge
	refused  prometheus.Gauge // store objects left out
	revision prometheus.Gauge // the store's revision last seen
	ready    prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		converge: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bothnia_agent_converge_seconds", Help: "Time to converge the node after a store change.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		changes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "bothnia_agent_changes_total", Help: "Kernel objects written by converges."}),
		repairs:  prometheus.NewCounter(prometheus.CounterOpts{Name: "bothnia_agent_drift_repairs_total", Help: "Differences the periodic read-back found and repaired."}),
		revoked:  prometheus.NewCounter(prometheus.CounterOpts{Name: "bothnia_agent_revoked_connections_total", Help: "Conntrack entries deleted because the firewall no longer allows them."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "bothnia_agent_converge_failures_total", Help: "Converges that failed (the node kept its state)."}),
		ports:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "bothnia_agent_ports", Help: "VM ports on the node."}),
		refused:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "bothnia_agent_refused_objects", Help: "Store objects left out of the fabric (invalid)."}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "bothnia_agent_store_revision", Help: "The store revision the agent has seen."}),
		ready:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "bothnia_agent_ready", Help: "1 when the node is converged to the store."}),
	}
	r.MustRegister(m.converge, m.changes, m.repairs, m.revoked, m.failures, m.ports, m.refused, m.revision, m.ready)
	return m
}

// drops exports the firewall's drop counters, read from the kernel at
// each scrape (they are the kernel's, not the agent's).
type drops struct {
	ns   string
	desc *prometheus.Desc
}

func newDrops(ns string) *drops {
	return &drops{ns: ns, desc: prometheus.NewDesc("bothnia_firewall_drops_total",
		"Packets the node's firewall dropped, by reason (nftables renderer).", []string{"reason"}, nil)}
}

func (d *drops) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d *drops) Collect(ch chan<- prometheus.Metric) {
	counts, err := firewall.ReadDrops(d.ns)
	if err != nil {
		return // no tables yet, or the iptables renderer
	}
	for _, r := range firewall.DropReasons {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(counts[r].Packets), r)
	}
}

// listen takes host:port or unix:/path.
func listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}
