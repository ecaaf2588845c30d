package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/net/ipv4"
)

// What bothnia's load generators (DORA, DNSLoad) share: pacing sends a
// batch a millisecond, and writing and reading datagrams in batches
// (sendmmsg, recvmmsg), so that the generator costs a fraction of what
// it measures.

// runGenerator runs `bothnia bench SUB ARGS --seconds secs` (one of the
// generators above) in the client namespace, in a process of its own so
// that ld (nil: none) counts its CPU apart, and decodes the JSON it writes
// into result.
func runGenerator(cli string, secs int, ld *load, result any, sub string, args ...string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", cli, "timeout", strconv.Itoa(secs + 20), exe, "bench", sub},
		append(args, "--seconds", strconv.Itoa(secs))...)...)
	out, err := cmd.Output()
	if ld != nil {
		ld.done(cmd)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, result); err != nil {
		return fmt.Errorf("its result: %w: %s", err, out)
	}
	return nil
}

// pace calls send every millisecond for d with the number of messages due
// by then at rate (a running total).
func pace(t0 time.Time, rate int, d time.Duration, send func(due int)) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for now := range t.C {
		el := now.Sub(t0)
		if el >= d {
			return
		}
		send(int(float64(rate) * el.Seconds()))
	}
}

// writeBatch writes every message, as many per system call as the kernel
// takes; it returns how many went.
func writeBatch(pc *ipv4.PacketConn, msgs []ipv4.Message) (int, error) {
	sent := 0
	for len(msgs) > 0 {
		n, err := pc.WriteBatch(msgs, 0)
		if err != nil {
			return sent, err
		}
		sent += n
		msgs = msgs[n:]
	}
	return sent, nil
}

// readBatches hands batches of received datagrams to handle until the
// connection's read deadline passes or it is closed.
func readBatches(pc *ipv4.PacketConn, handle func([]ipv4.Message)) {
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
				return
			}
			continue
		}
		handle(msgs[:n])
	}
}
