// Package testproc is what the test-server packages (redistest,
// mariadbtest) share about owning a server process: finding its binary,
// running it until the test kills it (or the test binary dies), and
// restarting it on the port its clients already know.
package testproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"anqi-edge/internal/procattr"
)

// ErrPortBusy marks a start that failed because its port was taken; the
// server packages wrap it into the error their start returns.
var ErrPortBusy = errors.New("port already in use")

// Require returns path, or ends the test when err says the binary is not
// installed: t.Fatal under CI (the CI machine must install aptPkg, and
// .ci/run does), t.Skip elsewhere. prefix names the calling package in the
// message.
func Require(t testing.TB, prefix, path string, err error, aptPkg string) string {
	t.Helper()
	if err == nil {
		return path
	}
	if ci := os.Getenv("CI"); ci != "" {
		t.Fatalf("%s: %v but CI=%q is set: the CI machine must install it (apt-get install %s; .ci/run does this)",
			prefix, err, ci, aptPkg)
	}
	t.Skipf("%s: %v: apt-get install %s", prefix, err, aptPkg)
	return ""
}

// Proc is one started server process. Its methods are safe on a nil Proc
// (nothing running).
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

// Start starts cmd so that the kernel kills it if the test binary dies
// (Linux), and reaps it when it exits.
func Start(cmd *exec.Cmd) (*Proc, error) {
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() { // ends when the process exits
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL (which also ends a stopped process) and waits until
// the process is gone.
func (p *Proc) Kill() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Terminate asks the process to exit (SIGTERM, and SIGCONT so a stopped
// one can), waits up to grace, then kills it.
func (p *Proc) Terminate(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// ErrExited is WaitReady's answer when the process ended before it was
// ready.
var ErrExited = errors.New("exited during startup")

// WaitReady polls ready every `every` until it answers nil, the process
// exits (ErrExited, with how it ended), or timeout passes (ready's last
// error, and the process is killed).
func (p *Proc) WaitReady(ready func() error, timeout, every time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%w (%v)", ErrExited, p.cmd.ProcessState)
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("not ready within %v (last error: %v)", timeout, err)
		}
		time.Sleep(every)
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if p == nil {
		return errors.New("server not running")
	}
	return p.cmd.Process.Signal(sig)
}

// StartOnFreePort calls start on a port from free, and on a fresh one
// while the last was taken between free and start (ErrPortBusy), at most
// tries times. It returns start's last error, nil once one succeeded.
func StartOnFreePort(tries int, free func() (int, error), start func(port int) error) error {
	var err error
	for range tries {
		var port int
		if port, err = free(); err != nil {
			return err
		}
		if err = start(port); err == nil || !errors.Is(err, ErrPortBusy) {
			return err
		}
	}
	return err
}

// RestartOnPort calls start(port) until it succeeds, every `every` while
// it fails with ErrPortBusy (the old process's socket lingering), for at
// most `within`. Any other failure, or a port still busy after that, ends
// the test: clients hold this port, so another one would not do.
func RestartOnPort(t testing.TB, prefix string, port int, within, every time.Duration, start func(port int) error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := start(port)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrPortBusy) || time.Now().After(deadline) {
			t.Fatalf("%s: restarting on port %d: %v", prefix, port, err)
		}
		time.Sleep(every)
	}
}

// OpenLog opens the server's log for appending and marks the start of
// this attempt in it ("==== prefix: starting what on port N at T ===="); from is where the attempt's output begins (see
// LogTail), so an earlier run's "Address already in use" never decides
// this one.
func OpenLog(path, prefix, what string, port int) (f *os.File, from int64, err error) {
	f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, 0, err
	}
	if fi, err := f.Stat(); err == nil {
		from = fi.Size()
	}
	fmt.Fprintf(f, "\n==== %s: starting %s on port %d at %s ====\n", prefix, what, port, time.Now().Format(time.RFC3339Nano))
	return f, from, nil
}

// LogTail returns the last n lines of the log at path from byte from on
// (at most its last 16 KiB).
func LogTail(path string, from int64, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if from > 0 && from <= int64(len(data)) {
		data = data[from:]
	}
	return Tail(string(data), n)
}

// Tail returns the last n lines of s (at most its last 16 KiB).
func Tail(s string, n int) string {
	const maxBytes = 16 << 10
	if len(s) > maxBytes {
		s = s[len(s)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
