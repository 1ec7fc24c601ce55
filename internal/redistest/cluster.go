package redistest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"anqi-edge/internal/procattr"
	"anqi-edge/internal/testproc"
)

const (
	clusterMasters       = 3
	clusterCreateTimeout = 30 * time.Second
	clusterReadyTimeout  = 20 * time.Second
)

// Cluster is a local Redis Cluster of three masters without replicas.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts three redis-server processes in cluster mode on free
// ports (the bus ports, port+10000, free too), joins them with
// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` and
// waits until every node reports cluster_state:ok with all 16384 slots
// assigned and all nodes known. All nodes are killed when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	server := requireServer(t)
	cli := requireBinary(t, "redis-cli", "redis-tools")

	c := &Cluster{}
	used := map[int]bool{}
	for i := range clusterMasters {
		s := newServer(t, server, nil)
		s.extra = []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
		}
		err := testproc.StartOnFreePort(maxPortTries, func() (int, error) { return freePort(true, used) }, s.start)
		if err != nil {
			t.Fatalf("redistest: starting cluster node %d: %v", i, err)
		}
		used[s.port], used[s.port+10000] = true, true
		c.nodes = append(c.nodes, s)
	}

	addrs := c.Addrs()
	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGKILL)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create %s: %v\n%s%s",
			strings.Join(addrs, " "), err, out.String(), c.logTails())
	}

	err := waitFor(context.Background(), clusterReadyTimeout, func() error {
		for _, addr := range addrs {
			info, err := do(addr, time.Second, "CLUSTER", "INFO")
			if err != nil {
				return fmt.Errorf("CLUSTER INFO on %s: %w", addr, err)
			}
			for _, want := range []string{
				"cluster_state:ok",
				"cluster_slots_assigned:16384",
				"cluster_slots_ok:16384",
				fmt.Sprintf("cluster_known_nodes:%d", clusterMasters),
				fmt.Sprintf("cluster_size:%d", clusterMasters),
			} {
				if !strings.Contains(info, want+"\r\n") && !strings.HasSuffix(info, want) {
					return fmt.Errorf("node %s not ready (want %s):\n%s", addr, want, info)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("redistest: cluster did not become ready within %v: %v\nredis-cli output:\n%s%s",
			clusterReadyTimeout, err, out.String(), c.logTails())
	}
	return c
}

// Addrs returns the "127.0.0.1:PORT" addresses of the three masters.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Nodes returns the servers behind the cluster, in Addrs order. A node that
// is killed and restarted keeps its cluster identity and slots (its
// nodes.conf survives in its directory).
func (c *Cluster) Nodes() []*Server {
	return append([]*Server(nil), c.nodes...)
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, s := range c.nodes {
		fmt.Fprintf(&b, "\n--- log of %s (%s) ---\n%s\n", s.Addr(), s.logPath, s.LogTail())
	}
	return b.String()
}
