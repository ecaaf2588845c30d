package agent

import "context"

// revoker runs the revocations of connections beside the converges. A
// revocation dumps the conntrack table, whose walk costs the same however
// few entries the node has (tens of milliseconds here); run in line, it
// held back the next change by as much. Only the latest converged fabric
// matters, as it is what connections are judged by, so a revocation not
// yet started is replaced by a newer one.
type revoker struct {
	next chan func() (int, error)
}

func newRevoker() *revoker { return &revoker{next: make(chan func() (int, error), 1)} }

// queue replaces a waiting revocation with job. It is called from one
// goroutine (the agent's loop).
func (r *revoker) queue(job func() (int, error)) {
	select {
	case <-r.next:
	default:
	}
	r.next <- job
}

// run does the queued revocations until ctx ends; done reports each.
func (r *revoker) run(ctx context.Context, done func(int, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-r.next:
			n, err := job()
			done(n, err)
		}
	}
}
