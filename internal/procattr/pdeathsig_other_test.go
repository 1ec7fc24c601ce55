//go:build !linux

package procattr

import "syscall"

func pdeathsig(*syscall.SysProcAttr) syscall.Signal { return 0 }
