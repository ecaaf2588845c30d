package lab

import (
	"context"

	"crypto/sha256"
	"errors"
	"fmt"
	"go.yaml.in/yaml/v3"
	"os"
	"path/filepath"
	"strings"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/spec"
)

// How the lab runs a foreign site's cloud.
const (
	// ForeignNeutron: the site's nodes run real neutron-linuxbridge-agents
	// (and its DHCP node a neutron-dhcp-agent) driven by a real
	// neutron-server, as CSC runs ePouta; its VMs are Neutron ports booted
	// as Nova boots them.
	ForeignNeutron = "neutron"
	// ForeignStandIn: bothnia's agent imitates the site's Neutron (plain
	// learning bridges, Neutron's iptables layout). The fallback where the
	// packages are missing.
	ForeignStandIn = "stand-in"
)

// foreignMode decides how the lab runs the spec's foreign sites: the
// lab's setting, else real Neutron where this machine can run it. It says
// why when it falls back to the stand-in.
func (l *Lab) foreignMode(s *spec.Spec) (mode, why string) {
	foreign := false
	for _, sn := range s.SiteNames() {
		foreign = foreign || s.Sites[sn].Foreign()
	}
	switch {
	case !foreign:
		return "", ""
	case l.Foreign == ForeignStandIn:
		return ForeignStandIn, "asked for"
	case l.Foreign == ForeignNeutron || l.Foreign == "":
		if m := devcloud.Missing(true); len(m) > 0 {
			if l.Foreign == ForeignNeutron {
				return ForeignNeutron, ""
			}
			return ForeignStandIn, "this machine lacks " + strings.Join(m, ", ") + " (scripts/install-deps.sh installs them)"
		}
		return ForeignNeutron, ""
	}
	return ForeignStandIn, fmt.Sprintf("unknown foreign mode %q", l.Foreign)
}

// ForeignMode is how the running lab runs its foreign sites, as its last
// up recorded ("" without foreign sites).
func (l *Lab) ForeignMode() string {
	b, _ := os.ReadFile(filepath.Join(l.stateDir(), "foreign"))
	return strings.TrimSpace(string(b))
}

func (l *Lab) saveForeignMode(mode string) error {
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.stateDir(), "foreign"), []byte(mode+"\n"), 0o644)
}

// Project is the Neutron project of the lab's objects: one per lab, so
// that labs sharing a deployment (tests) never see each other's groups.
func (l *Lab) Project() string {
	h := sha256.Sum256([]byte("lab/" + l.Prefix))
	return fmt.Sprintf("%x", h[:16])
}

func (l *Lab) cloudDir() string { return filepath.Join(l.stateDir(), "neutron") }

// CloudsFile is the clouds.yaml naming the lab's foreign clouds (auth
// none), for bothnia openstack commands run against the lab.
func (l *Lab) CloudsFile() string { return filepath.Join(l.stateDir(), "clouds.yaml") }

// deployment is the Neutron the lab's foreign sites run on: the one the
// lab was given (tests share one), else the lab's own, started once.
func (l *Lab) deployment(ctx context.Context, s *spec.Spec) (*devcloud.Deployment, error) {
	if l.Cloud != nil {
		return l.Cloud, nil
	}
	if d, err := devcloud.Open(l.cloudDir()); err == nil {
		return d, nil
	}
	var names []string
	for _, sn := range s.SiteNames() {
		if s.Sites[sn].Foreign() {
			names = append(names, cloudName(s, sn))
		}
	}
	return devcloud.Start(ctx, l.cloudDir(), devcloud.Options{Agents: true, DNSDomain: s.Fabric.Domain}, names...)
}

// cloudName is the cloud a foreign site's sync talks to: its spec's cloud,
// else the site's name.
func cloudName(s *spec.Spec, site string) string {
	if c := s.Sites[site].Cloud; c != "" {
		return c
	}
	return site
}

// writeClouds writes CloudsFile for the foreign sites of the spec.
func (l *Lab) writeClouds(d *devcloud.Deployment, s *spec.Spec) error {
	var b strings.Builder
	b.WriteString("clouds:\n")
	for _, sn := range s.SiteNames() {
		if !s.Sites[sn].Foreign() {
			continue
		}
		c := d.Clouds[cloudName(s, sn)]
		if c == nil {
			return fmt.Errorf("lab: the Neutron deployment in %s has no cloud %q for site %s", d.Dir, cloudName(s, sn), sn)
		}
		fmt.Fprintf(&b, "  %s:\n    auth_type: none\n    auth: {endpoint: %q, project_id: %s}\n", cloudName(s, sn), c.Endpoint, l.Project())
	}
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(l.CloudsFile(), []byte(b.String()), 0o600)
}

// foreignClouds connects to the foreign sites' clouds through CloudsFile,
// by site.
func (l *Lab) foreignClouds(ctx context.Context, s *spec.Spec) (map[string]*openstack.Cloud, error) {
	out := map[string]*openstack.Cloud{}
	for _, sn := range s.SiteNames() {
		if !s.Sites[sn].Foreign() {
			continue
		}
		c, err := openstack.Connect(ctx, cloudName(s, sn), openstack.Options{CloudsFile: l.CloudsFile()})
		if err != nil {
			return nil, fmt.Errorf("lab: site %s: %w", sn, err)
		}
		out[sn] = c
	}
	return out, nil
}

// neutronSites is what up needs of the foreign sites' real clouds.
type neutronSites struct {
	d      *devcloud.Deployment
	clouds map[string]*openstack.Cloud  // by site
	netIDs map[string]map[string]string // site -> network name -> UUID
}

// neutronUp makes the foreign sites' clouds hold the spec's part for them
// (starting the lab's Neutron if it has none yet) and returns the spec
// with each foreign VM's port UUID, which names its tap as Nova names it.
func (l *Lab) neutronUp(ctx context.Context, s *spec.Spec, netMTU int) (*spec.Spec, *neutronSites, error) {
	d, err := l.deployment(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	if err := l.writeClouds(d, s); err != nil {
		return nil, nil, err
	}
	clouds, err := l.foreignClouds(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	out, err := copySpec(s)
	if err != nil {
		return nil, nil, err
	}
	ns := &neutronSites{d: d, clouds: clouds, netIDs: map[string]map[string]string{}}
	for sn, c := range clouds {
		ids, nets, err := provision(ctx, c, out, sn, l.Project(), netMTU)
		if err != nil {
			return nil, nil, err
		}
		ns.netIDs[sn] = nets
		for _, n := range out.Networks {
			for _, vm := range n.VMs {
				if id, ok := ids[vm.Name]; ok {
					vm.PortID = id
				}
			}
		}
	}
	if err := out.Validate(); err != nil {
		return nil, nil, err
	}
	return out, ns, nil
}

// copySpec is a deep copy, through YAML.
func copySpec(s *spec.Spec) (*spec.Spec, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return nil, err
	}
	return spec.Parse(b)
}

// stopNeutron ends what the lab runs of Neutron: its own deployment, or
// its hosts' agents and its objects in a shared one; and the DHCP agents'
// namespaces, which outlive them.
func (l *Lab) stopNeutron() error {
	if l.ForeignMode() != ForeignNeutron {
		if l.Cloud == nil && fileExists(l.cloudDir()) {
			return devcloud.Stop(l.cloudDir())
		}
		return nil
	}
	var errs []error
	ctx := context.Background()
	s, err := l.Spec()
	if err == nil && fileExists(l.CloudsFile()) {
		if clouds, err := l.foreignClouds(ctx, s); err == nil {
			for _, sn := range s.SiteNames() {
				if c := clouds[sn]; c != nil && s.Sites[sn].Foreign() {
					nets, err := cleanProject(ctx, c, l.Project(), l.Cloud != nil)
					errs = append(errs, err)
					for _, id := range nets {
						errs = append(errs, deleteNS(devcloud.QDHCP(id)))
					}
				}
			}
		}
	}
	if l.Cloud != nil {
		if err == nil {
			for _, h := range l.neutronHosts(s) {
				errs = append(errs, l.Cloud.StopHost(h.NS))
			}
		}
	} else {
		errs = append(errs, devcloud.Stop(l.cloudDir()))
	}
	return errors.Join(errs...)
}

// deleteNS removes a namespace if it exists.
func deleteNS(name string) error {
	if !namespace.Exists(name) {
		return nil
	}
	return namespace.Delete(name)
}

// neutronStatus is a line per foreign node whose site's Neutron the lab
// runs: its agents, and where they log.
func (l *Lab) neutronStatus(s *spec.Spec) ([]string, bool) {
	if l.ForeignMode() != ForeignNeutron {
		return nil, true
	}
	d := l.Cloud
	if d == nil {
		var err error
		if d, err = devcloud.Open(l.cloudDir()); err != nil {
			return []string{fmt.Sprintf("%-8s neutron (the foreign sites' clouds, in %s: %v)", "STOPPED", l.cloudDir(), err)}, false
		}
	}
	var lines []string
	all := true
	for _, h := range l.neutronHosts(s) {
		state, what := "running", "linuxbridge agent"
		if h.DHCP {
			what += " and DHCP agent"
		}
		if !d.HostRunning(h) {
			state, all = "STOPPED", false
		}
		lines = append(lines, fmt.Sprintf("%-8s neutron-%s (site %s's own Neutron: %s, logs %s)", state, h.Name, s.NodeSite(h.Name), what, filepath.Join(d.Dir, "log")))
	}
	return lines, all
}
