package openstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// ConnectSites opens the cloud of every site that names one.
func ConnectSites(ctx context.Context, s *spec.Spec, o Options) (map[string]*Cloud, error) {
	out := map[string]*Cloud{}
	for _, sn := range s.SiteNames() {
		name := s.Sites[sn].Cloud
		if name == "" {
			continue
		}
		c, err := Connect(ctx, name, o)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", sn, err)
		}
		out[sn] = c
	}
	if len(out) == 0 {
		return nil, errors.New("openstack: no site names a cloud; set sites.<site>.cloud to its clouds.yaml entry and push the spec")
	}
	return out, nil
}

// ReadAll reads every site's inventory.
func ReadAll(ctx context.Context, clouds map[string]*Cloud) (map[string]*Inventory, error) {
	out := map[string]*Inventory{}
	for sn, c := range clouds {
		inv, err := Read(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", sn, err)
		}
		out[sn] = inv
	}
	return out, nil
}

// Report is what one import found and changed.
type Report struct {
	Changes  []store.Change `json:"changes"`
	Unmapped []Unmapped     `json:"unmapped"`
	Revision int64          `json:"revision"`
	Written  bool           `json:"written"`
}

// Import maps the clouds' inventories into the fabric in the store and,
// with write, writes the difference in one guarded transaction (retried
// when someone else wrote meanwhile). Ports that the fabric's validation
// refuses are reported and left out; the rest is written.
func Import(ctx context.Context, cli *clientv3.Client, invs map[string]*Inventory, write bool) (*Report, error) {
	for attempt := 0; ; attempt++ {
		rep, err := importOnce(ctx, cli, invs, write)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		return rep, err
	}
}

func importOnce(ctx context.Context, cli *clientv3.Client, invs map[string]*Inventory, write bool) (*Report, error) {
	have, rev, fabricRev, err := store.LoadFabric(ctx, cli)
	if err != nil {
		return nil, err
	}
	base, _, err := store.Assemble(have)
	if err != nil {
		return nil, err
	}
	for sn := range invs {
		if base.Sites[sn] == nil {
			return nil, fmt.Errorf("openstack: the store's fabric has no site %s", sn)
		}
	}
	merged, unmapped := Map(base, invs)
	want, err := store.Split(merged)
	if err != nil {
		return nil, err
	}
	_, problems, err := store.Assemble(want)
	if err != nil {
		return nil, fmt.Errorf("openstack: the clouds' objects make the fabric invalid: %w", err)
	}
	for _, p := range problems {
		delete(want, p.Key)
		unmapped = append(unmapped, Unmapped{Kind: "object", ID: p.Key, Reason: p.Err.Error()})
	}
	rep := &Report{Changes: store.Diff(have, want), Unmapped: unmapped, Revision: fabricRev}
	if !write || len(rep.Changes) == 0 {
		return rep, nil
	}
	if rep.Revision, err = store.Write(ctx, cli, want, rep.Changes, rev); err != nil {
		return rep, err
	}
	rep.Written = true
	return rep, nil
}

// Watch keeps the store in step with the clouds: every interval it reads
// each cloud's revision numbers and, when any moved, the inventories, and
// imports them. A cloud that cannot be read is retried with backoff (up to
// a minute) and changes nothing meanwhile: a half-read cloud would delete
// ports it missed. It returns when ctx ends.
func Watch(ctx context.Context, cli *clientv3.Client, clouds map[string]*Cloud, interval time.Duration, report func(*Report)) error {
	last := map[string]string{}
	backoff := interval
	for {
		changed, err := moved(ctx, clouds, last)
		if err == nil && changed {
			var invs map[string]*Inventory
			if invs, err = ReadAll(ctx, clouds); err == nil {
				var rep *Report
				if rep, err = Import(ctx, cli, invs, true); err == nil && report != nil {
					report(rep)
				}
			}
			if err != nil {
				clear(last) // read everything again next time
			}
		}
		if ctx.Err() != nil {
			return nil // a read cut short by the end is no failure
		}
		wait := interval
		if err != nil {
			slog.Warn("openstack watch", "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else {
			backoff = interval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func moved(ctx context.Context, clouds map[string]*Cloud, last map[string]string) (bool, error) {
	changed := false
	for sn, c := range clouds {
		fp, err := Revisions(ctx, c)
		if err != nil {
			return false, fmt.Errorf("site %s: %w", sn, err)
		}
		if last[sn] != fp {
			changed = true
			last[sn] = fp
		}
	}
	return changed, nil
}
