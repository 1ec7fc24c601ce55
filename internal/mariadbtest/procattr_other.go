//go:build !linux

package mariadbtest

import "syscall"

// sysProcAttr: there is no parent-death signal outside Linux; the t.Cleanup
// hooks are the only protection there.
func sysProcAttr() *syscall.SysProcAttr { return nil }
