package spec

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// Watch calls fn with the spec at path whenever the file changes (by
// modification time and size, checked every interval) until ctx ends. A
// spec that fails to load is logged and skipped: the last good one stays.
func Watch(ctx context.Context, path string, interval time.Duration, log *slog.Logger, fn func(*Spec)) {
	var last os.FileInfo
	if fi, err := os.Stat(path); err == nil {
		last = fi
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || (last != nil && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size()) {
			continue
		}
		last = fi
		s, err := Load(path)
		if err != nil {
			log.Error("spec changed but does not load; keeping the last good one", "path", path, "err", err)
			continue
		}
		log.Info("spec reloaded", "path", path)
		fn(s)
	}
}
