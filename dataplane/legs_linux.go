package dataplane

import (
	"errors"
	"fmt"

	"github.com/bothnia/bothnia/namespace"
)

// SetDown takes links of one of the node's namespaces down at once,
// outside a whole Apply: a router replica that must stop answering
// (fenced off the store, or its key taken) cannot wait for a converge.
// A link that does not exist is already down.
func SetDown(t Target, planNS string, names ...string) error {
	h, nsh, err := namespace.Netlink(t.NS(planNS))
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	var errs []error
	for _, n := range names {
		l, err := h.LinkByName(n)
		if err != nil {
			continue
		}
		if !owned(l) {
			errs = append(errs, &ForeignLinkError{Name: n, Kind: l.Type(), Alias: l.Attrs().Alias})
			continue
		}
		if err := h.LinkSetDown(l); err != nil {
			errs = append(errs, fmt.Errorf("%s: set %s down: %w", t.NS(planNS), n, err))
		}
	}
	return errors.Join(errs...)
}
