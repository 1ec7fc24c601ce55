//go:build !linux

package procattr

import "syscall"

// DieWithParent: there is no parent-death signal outside Linux; the
// caller's own cleanup is the only protection there. It returns an empty
// (non-nil) SysProcAttr so callers may set other fields on it.
func DieWithParent(sig syscall.Signal) *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
