//go:build unix

package server

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// usage is what the job's processes consumed so far.
type usage struct {
	cpu    time.Duration // user + system of waited-for children
	maxRSS int64         // bytes, largest child
}

// childrenUsage reads getrusage(RUSAGE_CHILDREN): it covers every child
// waited for, orphans reaped by the agent included.
func childrenUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return usage{}
	}
	rss := int64(ru.Maxrss)
	if runtime.GOOS != "darwin" {
		rss *= 1024 // KiB on Linux and the BSDs, bytes on macOS
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return usage{cpu: cpu, maxRSS: rss}
}

// cgroupPeak returns the peak memory of the container's cgroup (v2
// memory.peak or v1 memory.max_usage_in_bytes) when readable. It covers the
// agent too, and every process of the container at once, which is what
// the memory limit applies to.
func cgroupPeak() (int64, bool) {
	var candidates []string
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) != 3 {
				continue
			}
			switch {
			case f[0] == "0" && f[1] == "":
				candidates = append(candidates, filepath.Join("/sys/fs/cgroup", f[2], "memory.peak"))
			case strings.Contains(","+f[1]+",", ",memory,"):
				candidates = append(candidates, filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.max_usage_in_bytes"))
			}
		}
	}
	// With no cgroup namespace the container's own cgroup is often mounted
	// at the root while /proc/self/cgroup shows the host's path.
	candidates = append(candidates, "/sys/fs/cgroup/memory.peak", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes")
	for _, c := range candidates {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
			return n, true
		}
	}
	return 0, false
}

// resourcesLine is the last line of the log: the job's peak memory and
// CPU time since start.
func resourcesLine(start usage) string {
	now := childrenUsage()
	peak := now.maxRSS
	if p, ok := cgroupPeak(); ok {
		peak = p
	}
	cpu := now.cpu - start.cpu
	return fmt.Sprintf("Job resources: peak memory %.1f MiB, CPU time %.2f s", float64(peak)/(1<<20), cpu.Seconds())
}
