package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat reads a process's parent pid and CPU time (user + system) from
// /proc/PID/stat. ok is false off Linux or when the process is gone.
func procStat(pid int) (ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return ppid, time.Duration(utime+stime) * clockTick, true
}

// cpuOf returns the CPU time of pid, plus that of all its descendants
// when tree is set (nginx: master and workers). ok is false when it cannot
// be measured.
func cpuOf(pid int, tree bool) (time.Duration, bool) {
	_, total, ok := procStat(pid)
	if !ok || !tree {
		return total, ok
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total, true
	}
	parent := map[int]int{}
	cpu := map[int]time.Duration{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if pp, c, ok := procStat(p); ok {
			parent[p], cpu[p] = pp, c
		}
	}
	for p, c := range cpu {
		for q, hops := parent[p], 0; q != 0 && hops < 64; q, hops = parent[q], hops+1 {
			if q == pid {
				total += c
				break
			}
		}
	}
	return total, true
}
