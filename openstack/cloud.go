// Package openstack connects bothnia to the sites' clouds: it reads the
// VMs, networks and security groups from each cloud's Neutron into the
// fabric (Import, Watch), sets the sites' subnets to their half of the
// partition (PlanSubnets), and keeps Neutron address groups in a foreign
// cloud holding the managed site's members of each group used across sites
// (PlanSync), so that an unmodified Neutron admits them.
//
// What talks to a cloud is here; what decides (mapping, subnet and sync
// plans) is pure and takes plain inventories, so it is tested without one.
package openstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"go.yaml.in/yaml/v3"
)

// Cloud is one site's cloud: its Neutron, and the project new objects
// belong to.
type Cloud struct {
	Name      string
	Network   *gophercloud.ServiceClient
	ProjectID string
}

// Options say where the clouds are described.
type Options struct {
	// CloudsFile is a clouds.yaml; empty means the standard search
	// ($OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/,
	// /etc/openstack/).
	CloudsFile string
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
	// RetryBase is the first wait before retrying a 429 or 503 (default
	// 500 ms; it doubles, five retries at most).
	RetryBase time.Duration
}

// noauthEntry is what Connect reads itself from clouds.yaml: the keystone
// variants go to gophercloud, but a Neutron run without keystone
// (auth_type: none, as a standalone Neutron and the tests run it) has only
// an endpoint.
type noauthEntry struct {
	AuthType string `yaml:"auth_type"`
	Auth     struct {
		Endpoint  string `yaml:"endpoint"`
		ProjectID string `yaml:"project_id"`
	} `yaml:"auth"`
	NetworkEndpoint string `yaml:"network_endpoint_override"`
}

// Connect opens the named cloud of clouds.yaml (or, with an empty name,
// the OS_* environment).
func Connect(ctx context.Context, name string, o Options) (*Cloud, error) {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.RetryBase == 0 {
		o.RetryBase = 500 * time.Millisecond
	}
	httpc := http.Client{Timeout: o.Timeout}
	path, err := cloudsFile(o.CloudsFile)
	if err != nil && name != "" {
		return nil, fmt.Errorf("cloud %s: %w", name, err)
	}
	if path != "" && name != "" {
		if e, ok, err := readNoauth(path, name); err != nil {
			return nil, fmt.Errorf("cloud %s: %s: %w", name, path, err)
		} else if ok {
			ep := e.NetworkEndpoint
			if ep == "" {
				ep = e.Auth.Endpoint
			}
			if ep == "" {
				return nil, fmt.Errorf("cloud %s: %s: auth_type %s needs auth.endpoint (the Neutron API's URL)", name, path, e.AuthType)
			}
			pc := &gophercloud.ProviderClient{HTTPClient: httpc}
			setRetries(pc, o.RetryBase)
			sc := &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: gophercloud.NormalizeURL(ep), ResourceBase: gophercloud.NormalizeURL(ep) + "v2.0/"}
			return &Cloud{Name: name, Network: sc, ProjectID: e.Auth.ProjectID}, nil
		}
	}
	var ao gophercloud.AuthOptions
	var eo gophercloud.EndpointOpts
	var tlsc *tls.Config
	if name == "" {
		if ao, err = openstack.AuthOptionsFromEnv(); err != nil {
			return nil, fmt.Errorf("cloud: no cloud named and the OS_* environment is incomplete: %w; set sites.<site>.cloud to a clouds.yaml entry", err)
		}
		eo.Region = os.Getenv("OS_REGION_NAME")
	} else {
		opts := []clouds.ParseOption{clouds.WithCloudName(name)}
		if path != "" {
			opts = append(opts, clouds.WithLocations(path))
		}
		if ao, eo, tlsc, err = clouds.Parse(opts...); err != nil {
			return nil, fmt.Errorf("cloud %s: %w", name, err)
		}
	}
	ao.AllowReauth = true
	var pc *gophercloud.ProviderClient
	if tlsc != nil {
		pc, err = config.NewProviderClient(ctx, ao, config.WithHTTPClient(httpc), config.WithTLSConfig(tlsc))
	} else {
		pc, err = config.NewProviderClient(ctx, ao, config.WithHTTPClient(httpc))
	}
	if err != nil {
		return nil, fmt.Errorf("cloud %s: authenticate at %s: %w", name, ao.IdentityEndpoint, describe(err))
	}
	setRetries(pc, o.RetryBase)
	sc, err := openstack.NewNetworkV2(pc, eo)
	if err != nil {
		return nil, fmt.Errorf("cloud %s: no network endpoint in the catalog: %w", name, err)
	}
	return &Cloud{Name: name, Network: sc, ProjectID: ao.TenantID}, nil
}

// setRetries makes the client retry what a busy cloud answers with 429
// (any request) or 502/503/504 and failed connections (reads only: a write
// may have landed): at most five times, backing off from base, doubling,
// with jitter. Then the error is returned as it came.
func setRetries(pc *gophercloud.ProviderClient, base time.Duration) {
	const retries = 5
	wait := func(ctx context.Context, n uint) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(base<<(n-1) + rand.N(base/2)):
			return true
		}
	}
	pc.MaxBackoffRetries = retries
	pc.RetryBackoffFunc = func(ctx context.Context, _ *gophercloud.ErrUnexpectedResponseCode, err error, n uint) error {
		if !wait(ctx, n) {
			return err
		}
		return nil
	}
	pc.RetryFunc = func(ctx context.Context, method, _ string, _ *gophercloud.RequestOpts, err error, n uint) error {
		if method != http.MethodGet || n > retries || !transient(err) || !wait(ctx, n) {
			return err
		}
		return nil
	}
}

func transient(err error) bool {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		return code.Actual == http.StatusBadGateway || code.Actual == http.StatusServiceUnavailable || code.Actual == http.StatusGatewayTimeout
	}
	var ne net.Error
	return errors.As(err, &ne)
}

func cloudsFile(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", err
		}
		return explicit, nil
	}
	cands := []string{os.Getenv("OS_CLIENT_CONFIG_FILE"), "clouds.yaml"}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".config", "openstack", "clouds.yaml"))
	}
	cands = append(cands, "/etc/openstack/clouds.yaml")
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", errors.New("no clouds.yaml found (looked in $OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/, /etc/openstack/); pass --clouds FILE")
}

func readNoauth(path, name string) (noauthEntry, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return noauthEntry{}, false, err
	}
	var f struct {
		Clouds map[string]noauthEntry `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return noauthEntry{}, false, err
	}
	e, ok := f.Clouds[name]
	if !ok {
		return noauthEntry{}, false, nil
	}
	return e, e.AuthType == "none" || e.AuthType == "noauth", nil
}

// describe turns gophercloud's errors into what an operator acts on.
func describe(err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		switch code.Actual {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w (the credentials were refused: check the cloud's entry in clouds.yaml)", err)
		case http.StatusForbidden:
			return fmt.Errorf("%w (the account may not do this: ask the cloud's operator for the role)", err)
		case http.StatusNotFound:
			return fmt.Errorf("%w (it no longer exists, or the API lacks the extension)", err)
		case http.StatusConflict:
			return fmt.Errorf("%w (it changed or is in use meanwhile; run again)", err)
		case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
			return fmt.Errorf("%w (rate or quota limit: retried and still refused; raise the quota or slow down)", err)
		}
	}
	return err
}
