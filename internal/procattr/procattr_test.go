package procattr

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

func TestDieWithParent_AsksTheKernelForTheSignalOnLinux(t *testing.T) {
	attr := DieWithParent(syscall.SIGTERM)
	if attr == nil {
		t.Fatal("nil SysProcAttr: callers set Setpgid and the like on it")
	}
	if runtime.GOOS == "linux" {
		if got := pdeathsig(attr); got != syscall.SIGTERM {
			t.Errorf("Pdeathsig = %v, want SIGTERM", got)
		}
	}
	// A child started with it runs normally.
	cmd := exec.Command("true")
	cmd.SysProcAttr = attr
	if err := cmd.Run(); err != nil {
		t.Skipf("no `true` to run: %v", err)
	}
}
