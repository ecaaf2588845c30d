// Package namespace creates, enters and removes named network namespaces
// (the ones `ip netns` lists, bind-mounted under /var/run/netns).
//
// Entering a namespace changes the calling OS thread only, so every
// function that enters one locks the goroutine to its thread first and
// restores the thread's namespace before unlocking it. If restoring fails
// the thread is left locked, and Go destroys it when the goroutine ends,
// rather than letting a later goroutine run in the wrong namespace (see
// containernetworking/plugins pkg/ns for the long story).
package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where iproute2 keeps named namespaces.
const Dir = "/var/run/netns"

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Dir + "/" + name)
	return err == nil
}

// Create makes the named namespace if it does not exist yet. It reports
// whether it made one.
func Create(name string) (bool, error) {
	if Exists(name) {
		return false, nil
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return false, fmt.Errorf("netns %s: get current: %w", name, err)
	}
	defer orig.Close()
	// NewNamed moves this thread into the new namespace.
	h, err := netns.NewNamed(name)
	if err == nil {
		h.Close()
	}
	if rerr := netns.Set(orig); rerr != nil {
		return false, fmt.Errorf("netns %s: cannot return to the original namespace, thread abandoned: %w", name, rerr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return false, fmt.Errorf("netns %s: create: %w", name, err)
	}
	return true, nil
}

// Delete removes the named namespace; a missing one is not an error. The
// kernel destroys the namespace, and every link in it, once nothing holds it.
func Delete(name string) error {
	if !Exists(name) {
		return nil
	}
	err := netns.DeleteNamed(name)
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point: the file of a namespace whose mount never
		// reached this mount namespace (made under "ip netns exec"), or
		// already gone. The file alone is left; remove it.
		err = os.Remove(filepath.Join(Dir, name))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: delete: %w", name, err)
	}
	return nil
}

// List returns the named namespaces whose names start with prefix, sorted.
func List(prefix string) ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Open returns a handle on the named namespace; "" is the calling
// process's own namespace. The caller closes it.
func Open(name string) (netns.NsHandle, error) {
	if name == "" {
		return netns.Get()
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return h, fmt.Errorf("netns %s: open: %w", name, err)
	}
	return h, nil
}

// Netlink returns a netlink handle whose requests act in the named
// namespace without moving any thread, and the namespace's handle (for
// moving links there). The caller closes both.
func Netlink(name string) (*netlink.Handle, netns.NsHandle, error) {
	ns, err := Open(name)
	if err != nil {
		return nil, ns, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, ns, fmt.Errorf("netns %s: netlink: %w", name, err)
	}
	return h, ns, nil
}

// Do runs fn with the calling goroutine's thread inside the named
// namespace. Sockets fn opens stay in that namespace after Do returns.
func Do(name string, fn func() error) error {
	target, err := Open(name)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: get current: %w", name, err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: enter: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Keep the thread locked: it dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("netns %s: cannot leave, thread abandoned: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Sysctl reads a /proc/sys value inside the named namespace, where
// net.* settings are per namespace.
func Sysctl(ns, key string) (string, error) {
	var v string
	err := Do(ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// SetSysctl writes a /proc/sys value inside the named namespace.
func SetSysctl(ns, key, value string) error {
	return Do(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
}
